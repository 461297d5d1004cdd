import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  METHODS,
  type Server,
  type ServerResponse,
} from 'node:http';
import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';
import { carriesContent, type Fault, type ScriptedAnswer, scriptAnswer } from './scripted-answer.js';

export type { Fault, FaultProblem } from './scripted-answer.js';

/** A request the server received. */
export interface RecordedRequest {
  readonly method: string;
  /** Path and query string. */
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  /** Epoch ms when the request (its body included) was received. */
  readonly at: number;
}

/** Options of {@link FaultServer.start}. */
export interface FaultServerOptions {
  /** The answer when no scripted fault is left. @default {} (200 `{ ok: true, path, method }`) */
  readonly default?: Fault;
}

interface Route {
  readonly method: string;
  readonly path: string;
  readonly script: ScriptedAnswer[];
}

/**
 * An HTTP server for tests that misbehaves on demand: scripted faults are consumed one per request,
 * first those of a matching route, then the global script, then the default answer. Every request
 * is recorded, so that tests can assert on what a client sent (idempotency key, correlation id,
 * deadline) and how often.
 *
 * @example
 * const server = await FaultServer.start();
 * server.enqueue({ status: 503, retryAfter: 1 }, { reset: true }); // then 200s
 * server.route('GET', '/users/42', { hang: true });
 * // …call server.url…
 * expect(server.requests).toHaveLength(3);
 * await server.close();
 */
export class FaultServer {
  readonly #server: Server;
  readonly #script: ScriptedAnswer[] = [];
  readonly #routes: Route[] = [];
  readonly #requests: RecordedRequest[] = [];
  readonly #timers = new Set<NodeJS.Timeout>();
  #default: ScriptedAnswer;
  #closing: Promise<void> | undefined;

  private constructor(server: Server, fallback: ScriptedAnswer) {
    this.#server = server;
    this.#default = fallback;
  }

  /**
   * Starts a server on an ephemeral port of 127.0.0.1. Every fault is checked as it is given
   * (here, and by `enqueue`, `route` and `setDefault`). @throws InvalidOptionsError
   */
  static async start(options: FaultServerOptions = {}): Promise<FaultServer> {
    checkOptions('FaultServer.start', options, ['default']);
    const fallback = scriptAnswer('FaultServer.start default', options.default ?? {});
    let faultServer!: FaultServer;
    const server = createServer((req, res) => faultServer.#receive(req, res));
    faultServer = new FaultServer(server, fallback);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    return faultServer;
  }

  /** The port the server listens on. */
  get port(): number {
    const address = this.#server.address();
    if (address === null || typeof address === 'string') throw new Error('fault server is not listening');
    return address.port;
  }

  /** `http://127.0.0.1:<port>`, without a trailing slash. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Every request received so far, oldest first: a copy, as it is when read (each request frozen). */
  get requests(): readonly RecordedRequest[] {
    // A copy: one read before a later request or clear() stays as it was.
    return [...this.#requests];
  }

  /** Scripted faults not consumed yet, routes included. */
  get pending(): number {
    return this.#script.length + this.#routes.reduce((n, route) => n + route.script.length, 0);
  }

  /** Appends faults to the global script: each is the answer to one request, in order. */
  enqueue(...faults: Fault[]): this {
    this.#assertOpen('enqueue');
    this.#script.push(...scriptAnswers('FaultServer.enqueue', faults));
    return this;
  }

  /**
   * Appends faults to the script of one route: requests with this method and path consume them
   * before the global script. A path without `?` matches whatever the query string; one with `?`
   * matches that query only, and is served before a route naming only its path. The method is one
   * of Node's `METHODS`; the path printable ASCII as a request carries it (percent-encoded), or `*`.
   */
  route(method: string, path: string, ...faults: Fault[]): this {
    this.#assertOpen('route');
    // Node answers a method it cannot parse with 400 itself: such a route could never run.
    if (typeof method !== 'string' || !METHODS.includes(method.toUpperCase())) {
      throw new InvalidOptionsError(
        `FaultServer.route method must be one Node's HTTP parser knows (${METHODS.slice(0, 6).join(', ')}…), not ${describeValue(method)}`,
      );
    }
    // As a request carries it: a space or a character outside ASCII arrives percent-encoded.
    if (typeof path !== 'string' || !(path === '*' || /^\/[\x21-\x7e]*$/.test(path))) {
      throw new InvalidOptionsError(
        `FaultServer.route path must start with "/" and hold only printable ASCII (percent-encode the rest, as clients send it), or be "*", not ${describeValue(path)}`,
      );
    }
    const answers = scriptAnswers('FaultServer.route', faults);
    const upper = method.toUpperCase();
    const existing = this.#routes.find((r) => r.method === upper && r.path === path);
    if (existing) existing.script.push(...answers);
    else this.#routes.push({ method: upper, path, script: answers });
    return this;
  }

  /** The answer when no scripted fault is left. */
  setDefault(fault: Fault): this {
    this.#assertOpen('setDefault');
    this.#default = scriptAnswer('FaultServer.setDefault', fault);
    return this;
  }

  /** Forgets scripts, routes and recorded requests; the default stays. */
  clear(): this {
    this.#script.length = 0;
    this.#routes.length = 0;
    this.#requests.length = 0;
    return this;
  }

  /**
   * Stops the server, ending every connection: hanging, delayed and idle keep-alive ones. Called
   * again, it resolves when the first call does.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    await closed;
  }

  /** A script given after close() would never be consumed: a test meant to hit it would not. */
  #assertOpen(method: string): void {
    if (this.#closing !== undefined) {
      throw new InvalidOptionsError(`FaultServer.${method}: the server is closed; start another`);
    }
  }

  #receive(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('error', () => {});
    req.on('end', () => {
      const method = req.method ?? 'GET';
      const path = req.url ?? '/';
      // Frozen, headers included: what a test reads stays as it was received.
      const headers = { ...req.headers };
      for (const value of Object.values(headers)) if (Array.isArray(value)) Object.freeze(value);
      this.#requests.push(
        Object.freeze({
          method,
          path,
          headers: Object.freeze(headers),
          body: Buffer.concat(chunks).toString('utf8'),
          at: Date.now(),
        }),
      );
      const answer = this.#next(method, path);
      if (answer.kind === 'hang') return;
      const act = () =>
        answer.kind === 'reset' ? req.socket.resetAndDestroy() : respond(res, answer, method, path);
      if (answer.delayMs <= 0) {
        act();
        return;
      }
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        act();
      }, answer.delayMs);
      this.#timers.add(timer);
    });
  }

  #next(method: string, path: string): ScriptedAnswer {
    const pathname = path.split('?', 1)[0];
    // A route naming this query comes before one naming only the path; an emptied one is passed
    // by (it shadowed a route with a query that matched the same request: its script never ran).
    const scripted = (exact: boolean) =>
      this.#routes.find(
        (r) =>
          r.method === method &&
          r.script.length > 0 &&
          (exact ? r.path.includes('?') && r.path === path : !r.path.includes('?') && r.path === pathname),
      );
    const route = scripted(true) ?? scripted(false);
    return route?.script.shift() ?? this.#script.shift() ?? this.#default;
  }
}

/** Each fault of a call, checked and settled ({@link scriptAnswer}), named by its place. */
function scriptAnswers(where: string, faults: readonly Fault[]): ScriptedAnswer[] {
  return faults.map((fault, i) => scriptAnswer(faults.length === 1 ? where : `${where} fault ${i}`, fault));
}

function respond(
  res: ServerResponse,
  answer: Extract<ScriptedAnswer, { kind: 'answer' }>,
  method: string,
  path: string,
): void {
  if (res.destroyed) return;
  const { status } = answer;
  let body = answer.body;
  const headers = { ...answer.headers };
  if (body === undefined && status >= 200 && status < 300 && carriesContent(status)) {
    headers['content-type'] ??= 'application/json; charset=utf-8';
    body = Buffer.from(JSON.stringify({ ok: true, path, method }));
  }
  // A 204 or 304 carries no content-length (RFC 9110); a 205 says it has none (0).
  if (status !== 204 && status !== 304) headers['content-length'] = String(body?.length ?? 0);
  res.writeHead(status, headers);
  res.end(method === 'HEAD' ? undefined : body);
}
