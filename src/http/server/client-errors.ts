import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import type { Server } from 'node:net';
import type { Duplex } from 'node:stream';
import { PROBLEM_CONTENT_TYPE } from '../headers.js';
import { problem, renderProblem } from './problem.js';

/** What Node's HTTP parser refuses, by error code, and the status Node itself answers it with. */
const CLIENT_ERRORS: Readonly<Record<string, { readonly status: number; readonly detail: string }>> = {
  HPE_HEADER_OVERFLOW: { status: 431, detail: 'The request headers are larger than this server accepts.' },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: {
    status: 413,
    detail: 'The chunk extensions of the request body are larger than this server accepts.',
  },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, detail: 'The request did not arrive in time.' },
};
const MALFORMED = { status: 400, detail: 'The request is not valid HTTP/1.1.' };

const installed = new WeakSet<Server>();

/**
 * Answers what Node's HTTP parser refuses before any framework sees the request (headers too large
 * 431, a malformed request or a body cut short 400, a request too slow to arrive 408, an `Expect`
 * other than `100-continue` 417, an HTTP/1.1 request without `Host` 400, a `CONNECT` 400) with an
 * `application/problem+json` document, as every other error answer, instead of Node's empty answer
 * (or Fastify's plain JSON). The response is written on the raw socket when it is still writable
 * and no response to an earlier request on it has started, then the connection is closed, as Node
 * does. Its listener runs before the server's other `clientError` listeners, which then find the
 * socket closed. Calling it again on the same server does nothing.
 *
 * `ferryFastify` installs it on `app.server`; with Express, call it on the server you create.
 *
 * @example
 * const server = http.createServer(app);
 * ferryClientErrors(server);
 */
export function ferryClientErrors(server: Server): void {
  if (installed.has(server)) return;
  installed.add(server);
  server.prependListener('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    // A reset connection has nobody left to answer.
    if (error.code !== 'ECONNRESET' && socket.writable && !responseStarted(socket)) {
      const { status, detail } = CLIENT_ERRORS[error.code ?? ''] ?? MALFORMED;
      socket.write(rawProblemAnswer(status, detail));
    }
    socket.destroy(error);
  });
  refuseMissingHost(server);
  refuseTunnels(server);
  // An Expect other than 100-continue: Node answers 417 with an empty body unless someone listens.
  server.on('checkExpectation', (_request: IncomingMessage, response: ServerResponse) =>
    answerAndClose(
      response,
      417,
      'The server meets no expectation but 100-continue: send the request without Expect.',
    ),
  );
}

/**
 * A `CONNECT` request (a tunnel through a proxy): Node hands it to `connect` listeners only, never
 * to the framework, and with none it closes the connection unanswered. Answered 400 with a problem
 * document (the client's mistake: this server is no proxy; a 501 would count as the server's fault
 * wherever 5xx answers raise alarms, and a 405 must name methods only the routes know) once the
 * requests sent before it on the connection are answered, then the connection is closed; a server
 * that does tunnel (a `connect` listener of its own) answers them itself.
 */
function refuseTunnels(server: Server): void {
  const refuse = (_request: IncomingMessage, socket: Duplex) => {
    if (server.listenerCount('connect') > 1) return;
    // Whatever the client sends after it is not read.
    socket.on('error', () => {});
    // Requests sent before it on the connection (pipelined) are answered first, in order: a client
    // reads answers in the order it sent its requests, and would take the 400 for an earlier one's.
    const answer = () => {
      if (socket.destroyed) return;
      const earlier = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
      if (earlier != null && !earlier.writableFinished) {
        // Once, on whichever comes first: the answer sent, or its connection gone.
        const next = () => {
          earlier.off('finish', next);
          earlier.off('close', next);
          setImmediate(answer);
        };
        earlier.on('finish', next);
        earlier.on('close', next);
        return;
      }
      if (socket.writable)
        socket.end(rawProblemAnswer(400, 'This server is no proxy: CONNECT is not served.'));
      setTimeout(() => socket.destroy(), 1000).unref();
    };
    answer();
  };
  server.on('connect', refuse);
}

/** A whole answer, as written on a raw socket: a problem of `status`, and the connection closed after it. */
function rawProblemAnswer(status: number, detail: string): string {
  const body = renderProblem(problem(status, undefined, { detail }));
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n` +
    `content-type: ${PROBLEM_CONTENT_TYPE}\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\n` +
    'connection: close\r\n\r\n' +
    body
  );
}

/** Answers a request Node hands over with a problem of `status`, then closes the connection. */
function answerAndClose(response: ServerResponse, status: number, detail: string): void {
  const body = renderProblem(problem(status, undefined, { detail }));
  response.shouldKeepAlive = false;
  response.writeHead(status, {
    'content-type': PROBLEM_CONTENT_TYPE,
    'content-length': Buffer.byteLength(body),
  });
  response.end(body);
}

/**
 * An HTTP/1.1 request without `Host` (RFC 9112 3.2: answered 400): Node answers it with an empty
 * 400 of its own when `requireHostHeader` is on (its default), before any `request` listener runs.
 * Here the server's own check is turned off and the same check made where the server hands the
 * request to its listeners, answering a problem document instead; a server created with
 * `requireHostHeader: false` keeps taking such requests.
 */
function refuseMissingHost(server: Server): void {
  // `requireHostHeader` is on http.Server since Node 20, not in its typings.
  const http = server as Server & { requireHostHeader?: boolean };
  if (http.requireHostHeader !== true) return;
  http.requireHostHeader = false;
  const emit = server.emit;
  server.emit = function (this: Server, event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'request') {
      const [request, response] = args as [IncomingMessage, ServerResponse];
      if (request.httpVersion === '1.1' && request.headers.host === undefined) {
        answerAndClose(response, 400, 'An HTTP/1.1 request must have a Host header.');
        return true;
      }
    }
    return Reflect.apply(emit, this, [event, ...args]) as boolean;
  } as Server['emit'];
}

/** Node's own test before it writes its error answer: a response already on the wire would be corrupted. */
function responseStarted(socket: Duplex): boolean {
  const current = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  return current?.headersSent === true;
}
