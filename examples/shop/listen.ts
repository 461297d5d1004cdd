import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';

/** Where a service listens: `port` 0 (the default) takes a free one; loopback unless `host` says otherwise. */
export interface ListenOptions {
  readonly port?: number | undefined;
  readonly host?: string | undefined;
}

/** While closing, how often connections that carry no request being handled are closed. */
const IDLE_SWEEP_MS = 100;
/**
 * While closing, how long a request whose body is still arriving is given to finish sending it.
 * No handler has run for it yet (Fastify runs a handler once the body is in): cut, it did nothing.
 */
export const BODY_GRACE_MS = 1000;

/**
 * Starts `app` listening and resolves its base URL (`http://host:port`, the port actually taken).
 *
 * Its `close()` then ends in the time its requests in flight take, not a keep-alive's (72 s in
 * Fastify) nor a silent client's: Node's `server.close()` closes the connections idle at that
 * moment, but one whose answer was still on its way stays open until its client lets go, and one
 * that has sent nothing yet, or part of a request, until its client sends the rest. So, from the
 * moment the app closes, the last answer on each connection says `Connection: close` (one pipelined
 * behind it keeps it open), and every 100 ms the connections with no request being handled are
 * closed: idle ones, ones that have not sent a whole request head, and ones whose request body has
 * not all arrived {@link BODY_GRACE_MS} after the close began. A request a client sends behind an
 * answer marked close, while that answer is still being written, runs no handler: arriving after the
 * close began, it is refused by Fastify (`return503OnClosing`) or by ferryFastify (503), and that
 * refusal is lost with the connection; either way its client sees no answer for what was not done.
 */
export async function listen(app: FastifyInstance, options: ListenOptions = {}): Promise<string> {
  const host = options.host ?? '127.0.0.1';
  // A client may send its whole request and then close its sending side (nc -N, socat, some
  // proxies): Node then drops the answer by default, although the handler runs (an order placed,
  // its 201 never sent). Answered, then the connection ends.
  (app.server as typeof app.server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  // Each open connection, with its requests whose answers are not out yet (several when a client
  // pipelines them: Node runs their handlers at once and sends their answers in order).
  const connections = new Map<Socket, Set<IncomingMessage>>();
  app.server.on('connection', (socket: Socket) => {
    connections.set(socket, new Set());
    socket.once('close', () => connections.delete(socket));
  });
  app.server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    const pending = connections.get(request.socket);
    if (pending === undefined) return;
    pending.add(request);
    response.once('close', () => pending.delete(request));
  });
  let sweep: NodeJS.Timeout | undefined;
  const cutUnhandled = (since: number) => {
    const bodyLate = Date.now() - since >= BODY_GRACE_MS;
    for (const [socket, pending] of connections) {
      if (pending.size === 0 || (bodyLate && [...pending].every((request) => !request.complete))) {
        socket.destroy();
      }
    }
  };
  app.addHook('preClose', async () => {
    const since = Date.now();
    cutUnhandled(since);
    sweep = setInterval(() => cutUnhandled(since), IDLE_SWEEP_MS);
    sweep.unref();
  });
  app.addHook('onSend', async (request, reply) => {
    if (sweep === undefined) return;
    // Only the last answer on its connection says `close`: Node ends the connection after an answer
    // that does, and an answer to a request pipelined behind it, whose handler ran, would be lost.
    const pending = connections.get(request.raw.socket);
    if (pending === undefined || pending.size <= 1) reply.header('connection', 'close');
  });
  app.addHook('onClose', async () => {
    clearInterval(sweep);
  });
  await app.listen({ port: options.port ?? 0, host });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  return `http://${host}:${port}`;
}
