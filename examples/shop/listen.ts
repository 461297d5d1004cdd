import type { FastifyInstance } from 'fastify';

/** Where a service listens: `port` 0 (the default) takes a free one; loopback unless `host` says otherwise. */
export interface ListenOptions {
  readonly port?: number | undefined;
  readonly host?: string | undefined;
}

/** Starts `app` listening and resolves its base URL (`http://host:port`, the port actually taken). */
export async function listen(app: FastifyInstance, options: ListenOptions = {}): Promise<string> {
  const host = options.host ?? '127.0.0.1';
  await app.listen({ port: options.port ?? 0, host });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  return `http://${host}:${port}`;
}
