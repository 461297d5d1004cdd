import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

/**
 * Runs an ES module snippet in a fresh Node process where `vitest` cannot be resolved, as in a
 * project that did not install it (it is an optional peer), and `ferry` resolves to the sources.
 */
async function withoutVitest(source: string): Promise<string> {
  const hook = `export async function resolve(specifier, context, next) {
    if (specifier === 'vitest' || specifier.startsWith('vitest/')) {
      const error = new Error("Cannot find package 'vitest'");
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
