import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

/**
 * Runs an ES module snippet in a fresh Node process where `vitest` (or the `packages` named) cannot
 * be resolved, as in a project that did not install them (optional peers), and `ferry` resolves to
 * the sources.
 */
async function withoutVitest(source: string, packages: readonly string[] = ['vitest']): Promise<string> {
  const hook = `export async function resolve(specifier, context, next) {
    const name = specifier.split('/')[0];
    if (${JSON.stringify(packages)}.includes(name)) {
      const error = new Error("Cannot find package '" + name + "'");
      error.code = 'ERR_MODULE_NOT_FOUND';
      throw error;
    }
    return next(specifier, context);
  }`;
  const script = `
    import { register } from 'node:module';
    register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hook)}));
    ${source}
  `;
  const { stdout } = await run(
    process.execPath,
    ['--conditions=ferry-source', '--import', 'tsx', '--input-type=module', '-e', script],
    { cwd: new URL('../..', import.meta.url).pathname, timeout: 30_000 },
  );
  return stdout.trim();
}

describe('ferry/testing without vitest installed', () => {
  it('loads, and its tools work: FaultProxy, the harness', async () => {
    const out = await withoutVitest(`
      let blocked = 'vitest resolves';
      try { await import('vitest'); } catch { blocked = 'vitest blocked'; }
      const { FaultProxy, createTestHarness } = await import('ferry/testing');
      const net = await import('node:net');
      const server = net.createServer((socket) => socket.end('pong'));
      await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
      const proxy = await FaultProxy.start({ host: '127.0.0.1', port: server.address().port });
      const reply = await new Promise((resolve, reject) => {
        const socket = net.connect(proxy.port, '127.0.0.1');
        let data = '';
        socket.on('data', (chunk) => (data += chunk));
        socket.on('end', () => resolve(data));
        socket.on('error', reject);
      });
      await proxy.close();
      server.close();
      const harness = await createTestHarness({ service: 'probe' });
      await harness.close();
      console.log(blocked, reply, typeof harness);
    `);
    expect(out).toBe('vitest blocked pong object');
  });

  it('a contract suite called there says what to install', async () => {
    const out = await withoutVitest(`
      const { testTransport } = await import('ferry/testing');
      try {
        testTransport('x', { createTransport() {}, publishRaw() {} }, { orderedPerPublisher: true });
        console.log('no error');
      } catch (error) {
        console.log(error.code, /npm install --save-dev vitest/.test(error.message));
      }
    `);
    expect(out).toBe('DEPENDENCY_MISSING true');
  });
});

describe('ferry/testing without zod installed', () => {
  it('loads, with vitest or without it: FaultServer works', async () => {
    const probe = `
      const { FaultServer } = await import('ferry/testing');
      const server = await FaultServer.start();
      server.setDefault({ status: 204 });
      const answer = await fetch(server.url + '/x');
      await server.close();
      console.log(answer.status);
    `;
    expect(await withoutVitest(probe, ['zod'])).toBe('204');
    expect(await withoutVitest(probe, ['zod', 'vitest'])).toBe('204');
  });

  it('the transport and outbox suites, which check contracts with zod, say what to install', async () => {
    const out = await withoutVitest(
      `
      const { testTransport, testOutbox } = await import('ferry/testing');
      for (const suite of [
        () => testTransport('x', { createTransport() {}, publishRaw() {} }, { orderedPerPublisher: true }),
        () => testOutbox('x', { createStore() {} }),
      ]) {
        try {
          suite();
          console.log('no error');
        } catch (error) {
          console.log(error.code, /npm install --save-dev zod/.test(error.message));
        }
      }
    `,
      ['zod'],
    );
    expect(out.split('\n')).toEqual(['DEPENDENCY_MISSING true', 'DEPENDENCY_MISSING true']);
  });
});
