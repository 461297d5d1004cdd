import type { FastifyInstance } from 'fastify';

/** Where a service listens: `port` 0 (the default) takes a free one; loopback unless `host` says otherwise. */
export interface ListenOptions {
  readonly port?: number | undefined;
  readonly host?: string | undefined;
}

/** While closing, how often connections that have gone idle since the last sweep are closed. */
const IDLE_SWEEP_MS = 100;

/**
 * Starts `app` listening and resolves its base URL (`http://host:port`, the port actually taken).
 *
 * Its `close()` then ends in the time its requests in flight take, not a keep-alive's (72 s in
 * Fastify): Node's `server.close()` closes the connections idle at that moment, but one whose
 * answer was still on its way stays open until its client lets go. So, from the moment the app
 * closes, each answer says `Connection: close`, and connections that have gone idle are closed.
 */
export async function listen(app: FastifyInstance, options: ListenOptions = {}): Promise<string> {
  const host = options.host ?? '127.0.0.1';
  let sweep: NodeJS.Timeout | undefined;
  app.addHook('preClose', async () => {
    sweep = setInterval(() => app.server.closeIdleConnections(), IDLE_SWEEP_MS);
    sweep.unref();
  });
  app.addHook('onSend', async (_request, reply) => {
    if (sweep !== undefined) reply.header('connection', 'close');
  });
  app.addHook('onClose', async () => {
    clearInterval(sweep);
  });
  await app.listen({ port: options.port ?? 0, host });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  return `http://${host}:${port}`;
}
