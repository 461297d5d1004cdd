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

  it('down() resets open connections and refuses new ones, as a stopped server; up() takes them again on the same port', async () => {
    const upstream: Socket[] = [];
    const server = createServer((socket) => {
      upstream.push(socket);
      socket.on('error', () => {}); // Reset by down(): what the test checks on the client side.
      socket.on('data', (chunk) => socket.write(chunk));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const proxy = await FaultProxy.start({
      host: '127.0.0.1',
      port: (server.address() as { port: number }).port,
    });
    const echo = async (): Promise<string> => {
      const client = connect(proxy.port, '127.0.0.1');
      const ended = ending(client);
      client.write('ping');
      const answer = await Promise.race([
        new Promise<string>((resolve) => client.once('data', (chunk) => resolve(String(chunk)))),
        ended,
      ]);
      client.destroy();
      return answer;
    };
    try {
      const open = connect(proxy.port, '127.0.0.1');
      await once(open, 'connect');
      await new Promise((resolve) => setTimeout(resolve, 100));
      const openEnd = ending(open);
      const port = proxy.port;
      await proxy.down();
      expect(await openEnd).toBe('ECONNRESET');
      const before = upstream.length;
      expect(await echo()).toBe('ECONNREFUSED');
      expect(await echo()).toBe('ECONNREFUSED');
      expect(upstream).toHaveLength(before);
      await proxy.up();
      expect(proxy.port).toBe(port);
      expect(await echo()).toBe('ping');
    } finally {
      await proxy.close();
      server.close();
    }
  });

  // Each was accepted, and the first connection threw ERR_SOCKET_BAD_PORT inside the proxy: an
  // uncaught exception that killed the test process.
  it.each([
    ['a port past 65535', { host: '127.0.0.1', port: 70000 }, /port must be an integer from 1 to 65535/],
    ['a negative port', { host: '127.0.0.1', port: -1 }, /port must be an integer/],
    ['no port', { host: '127.0.0.1' }, /port must be an integer/],
    ['no host', { port: 5432 }, /host must be a host name/],
    ['a misspelt key', { host: '127.0.0.1', port: 5432, prot: 1 }, /has no option "prot"/],
    [
      'a bracketed IPv6 address (every connection was reset)',
      { host: '[::1]', port: 5432 },
      /without brackets/,
    ],
    ['a host with spaces around it', { host: ' 127.0.0.1 ', port: 5432 }, /host must be a host name/],
    ['a URL', new URL('http://127.0.0.1:5432'), /not a URL/],
    [
      'a host with a port in it (every connection was closed)',
      { host: 'localhost:5672', port: 5672 },
      /host must be a host name/,
    ],
    ['a host with a NUL', { host: '127.0.0.1\u0000', port: 5432 }, /host must be a host name/],
  ])('refuses %s as it starts, with INVALID_OPTIONS', async (_what, target, message) => {
    const error = await FaultProxy.start(target as never).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS' });
    expect((error as Error).message).toMatch(message);
  });

  it('takes a port as a string of digits, as read from the environment, and forwards through it', async () => {
    const server = createServer((socket) => socket.pipe(socket));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const proxy = await FaultProxy.start({
      host: 'localhost',
      port: String((server.address() as { port: number }).port) as never,
    });
    try {
      const client = connect(proxy.port, '127.0.0.1');
      client.write('echo');
      const [chunk] = (await once(client, 'data')) as [Buffer];
      expect(chunk.toString()).toBe('echo');
      client.destroy();
    } finally {
      await proxy.close();
      server.close();
    }
  });
});
