import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { FaultProxy } from './fault-proxy.js';

/** How a socket ended: the error code it saw, or `end` for a clean close. */
function ending(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    socket.on('close', () => resolve('end'));
    socket.resume();
  });
}

describe('FaultProxy', () => {
  it('reset() resets the connections it carries: the client and the server see ECONNRESET, not an end', async () => {
    const upstream: Socket[] = [];
    const server = createServer((socket) => upstream.push(socket));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const proxy = await FaultProxy.start({
      host: '127.0.0.1',
      port: (server.address() as { port: number }).port,
    });
    try {
      const client = connect(proxy.port, '127.0.0.1');
      await once(client, 'connect');
      client.write('hello');
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(upstream).toHaveLength(1);
      const clientEnd = ending(client);
      const serverEnd = ending(upstream[0] as Socket);
      proxy.reset();
      expect(await clientEnd).toBe('ECONNRESET');
      expect(await serverEnd).toBe('ECONNRESET');
      expect(proxy.connections).toBe(0);
    } finally {
      await proxy.close();
      server.close();
    }
  });
});
