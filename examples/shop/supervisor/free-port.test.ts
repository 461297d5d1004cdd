import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { freePorts, isPortFree } from './free-port.js';

const listen = (port: number, host = '127.0.0.1'): Promise<() => Promise<void>> =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ port, host, exclusive: true, ipv6Only: host.includes(':') }, () =>
      resolve(() => new Promise((done) => server.close(() => done()))),
    );
  });

describe('freePorts', () => {
  it('returns n distinct ports that can then be listened on', async () => {
    const ports = await freePorts(6);
    expect(ports).toHaveLength(6);
    expect(new Set(ports).size).toBe(6);
    for (const port of ports) expect(port > 0 && port < 65_536).toBe(true);
    const closers = await Promise.all(ports.map((port) => listen(port)));
    await Promise.all(closers.map((close) => close()));
  });

  it('picks below the ephemeral range, where no outgoing connection takes a port before the listen', async () => {
    // Linux's range; the test runs there (CI). An outgoing connection's local port, or another
    // program's port 0, is always inside it.
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    const ports = await freePorts(20);
    for (const port of ports) expect(port >= 20_000 && port < low).toBe(true);
    // Random, not counted up from one place: two processes picking at once rarely meet.
    expect(new Set(ports.map((port) => Math.floor(port / 100))).size).toBeGreaterThan(5);
  });

  it('returns nothing for 0 and refuses a negative or fractional count', async () => {
    expect(await freePorts(0)).toEqual([]);
    await expect(freePorts(-1)).rejects.toThrow(RangeError);
    await expect(freePorts(1.5)).rejects.toThrow(RangeError);
  });
});

describe('isPortFree', () => {
  it('is false while another program listens on 127.0.0.1, true once it stopped', async () => {
    const [port] = (await freePorts(1)) as [number];
    expect(await isPortFree(port)).toBe(true);
    const stop = await listen(port);
    expect(await isPortFree(port)).toBe(false);
    await stop();
    expect(await isPortFree(port)).toBe(true);
  });

  it('is false while another program listens on ::1 only: localhost:PORT would reach it', async () => {
    const [port] = (await freePorts(1)) as [number];
    const stop = await listen(port, '::1');
    try {
      expect(await isPortFree(port)).toBe(false);
    } finally {
      await stop();
    }
    expect(await isPortFree(port)).toBe(true);
  });
});
