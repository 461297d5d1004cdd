import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isInvalidOptionsError } from 'ferry';
import { waitFor } from 'ferry/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { type ProcessSpec, type Supervisor, type SupervisorOptions, startSupervisor } from './supervisor.js';
import { fixture, isAlive, recordingLogger, sink } from './test-kit.js';

const running: Supervisor[] = [];
const dirs: string[] = [];

afterEach(async () => {
  await Promise.all(running.splice(0).map((supervisor) => supervisor.stop()));
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function node(name: string, script: string, extra: Partial<ProcessSpec> = {}): ProcessSpec {
  return {
    name,
    instances: 1,
    command: process.execPath,
    args: [fixture(script)],
    env: () => ({}),
    ...extra,
  };
}

function start(options: Omit<SupervisorOptions, 'logger' | 'stdout' | 'stderr'>) {
  const logger = recordingLogger();
  const stdout = sink();
  const stderr = sink();
  const supervisor = startSupervisor({ ...options, logger, stdout: stdout.stream, stderr: stderr.stream });
  running.push(supervisor);
  return { supervisor, logger, stdout, stderr };
}

const tempDir = (): string => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-supervisor-'));
  dirs.push(dir);
  return dir;
};

const noJitter = { jitter: 0 } as const;

describe('startSupervisor', () => {
  it('copies each child’s output line by line, prefixed with name#instance (the name alone for one instance), and flushes a last partial line', async () => {
    const { supervisor, stdout, stderr } = start({
      processes: [
        node('echo', 'lines.mjs', { instances: 2, env: (instance) => ({ INSTANCE: String(instance) }) }),
        node('solo', 'lines.mjs', { env: () => ({ INSTANCE: 'only' }) }),
      ],
      backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000 }, // no restart within the test
    });
    await waitFor(
      () => supervisor.status().every((instance) => !instance.running) && stdout.lines().length === 12,
      () => `all three wrote and exited; stdout so far:\n${stdout.text()}`,
    );
    const lines = stdout.lines();
    for (const label of ['echo#0', 'echo#1']) {
      const own = lines.filter((line) => line.startsWith(`${label} | `)).map((line) => line.slice(9));
      expect(own).toEqual([`instance=${label.slice(-1)}`, 'out one', 'out two', 'no newline at exit']);
    }
    const solo = lines
      .filter((line) => line.startsWith('solo'))
      .map((line) => line.replace(/^solo +\| /, ''));
    expect(solo).toEqual(['instance=only', 'out one', 'out two', 'no newline at exit']);
    await waitFor(() => stderr.lines().length === 3, 'three stderr lines');
    expect(stderr.lines().sort()).toEqual(['echo#0 | err line', 'echo#1 | err line', 'solo   | err line']);
  });

  it('gives each instance its own environment over the supervisor’s, the same after a restart', async () => {
    const { supervisor, stdout } = start({
      processes: [
        node('echo', 'lines.mjs', { instances: 2, env: (instance) => ({ INSTANCE: `i${instance}` }) }),
      ],
      backoff: { initialDelayMs: 10, ...noJitter },
    });
    await waitFor(() => supervisor.status().every((instance) => instance.restarts >= 1), 'a restart of each');
    // Each instance's second run wrote (counted per instance: under load one instance may run three
    // times before the other's second run writes).
    const seen = () => stdout.lines().filter((line) => line.includes('instance='));
    await waitFor(
      () =>
        seen().filter((line) => line === 'echo#0 | instance=i0').length >= 2 &&
        seen().filter((line) => line === 'echo#1 | instance=i1').length >= 2,
      () => `second runs wrote; stdout:\n${stdout.text()}`,
    );
    expect(seen().every((line) => line === 'echo#0 | instance=i0' || line === 'echo#1 | instance=i1')).toBe(
      true,
    );
  });

  it('restarts a child that crashed, logs which instance died, how, and when it comes back, and counts the restart', async () => {
    const counter = join(tempDir(), 'runs');
    const { supervisor, logger, stdout } = start({
      processes: [
        node('orders', 'crash.mjs', {
          instances: 2,
          env: (i) => ({ EXIT_CODE: '3', CRASHES: '1', COUNTER_FILE: `${counter}${i}` }),
        }),
      ],
      backoff: { initialDelayMs: 20, ...noJitter },
    });
    await waitFor(
      () => stdout.lines().length === 2,
      () => `both second runs stay up; stdout:\n${stdout.text()}`,
    );
    expect(stdout.lines().sort()).toEqual(['orders#0 | run 2 stays up', 'orders#1 | run 2 stays up']);
    const status = supervisor.status();
    expect(status.map(({ label, running, restarts }) => ({ label, running, restarts }))).toEqual([
      { label: 'orders#0', running: true, restarts: 1 },
      { label: 'orders#1', running: true, restarts: 1 },
    ]);
    const warnings = logger.entries.filter((entry) => entry.level === 'warn');
    expect(warnings.map((entry) => entry.fields.process).sort()).toEqual(['orders#0', 'orders#1']);
    for (const warning of warnings) {
      expect(warning.message).toMatch(
        /^orders#[01] \(pid \d+\) exited with code 3 after \d+\.\d s; restart 1 in 20 ms$/,
      );
      expect(warning.fields).toMatchObject({ code: 3, signal: null, restartInMs: 20 });
    }
  });

  it('brings back a child SIGKILLed from outside, with a new pid', async () => {
    const { supervisor, logger, stdout } = start({
      processes: [node('payments', 'forever.mjs', { instances: 2 })],
      backoff: { initialDelayMs: 20, ...noJitter },
    });
    await waitFor(() => supervisor.status().every((instance) => instance.pid !== undefined), 'both started');
    const victim = supervisor.status()[1]!.pid!;
    await waitFor(() => stdout.text().includes(`pid=${victim}`), 'the victim is ready');
    process.kill(victim, 'SIGKILL');
    await waitFor(
      () => supervisor.status()[1]!.restarts === 1 && supervisor.status()[1]!.running,
      'restarted',
    );
    const after = supervisor.status();
    expect(after[1]!.pid).not.toBe(victim);
    expect(after[0]!.restarts).toBe(0);
    const warnings = logger.messages('warn');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      new RegExp(
        `^payments#1 \\(pid ${victim}\\) was killed by SIGKILL after \\d+\\.\\d s; restart 1 in 20 ms$`,
      ),
    );
  });

  it('kill(name, instance, signal) signals one instance, which comes back; false between runs; throws for an unknown one', async () => {
    const { supervisor, stdout } = start({
      processes: [node('inventory', 'forever.mjs')],
      backoff: { initialDelayMs: 300, ...noJitter },
    });
    await waitFor(() => stdout.text().includes('ready'), 'ready');
    const first = supervisor.status()[0]!.pid!;
    expect(supervisor.kill('inventory', 0, 'SIGKILL')).toBe(true);
    await waitFor(() => !supervisor.status()[0]!.running, 'down');
    expect(supervisor.kill('inventory', 0, 'SIGKILL')).toBe(false);
    await waitFor(() => supervisor.status()[0]!.running, 'back');
    expect(supervisor.status()[0]!.pid).not.toBe(first);
    expect(() => supervisor.kill('inventory', 1)).toThrow(/no instance 1 of inventory/);
    expect(() => supervisor.kill('nope', 0)).toThrow(/no instance 0 of nope/);
  });

  it('lengthens the delay while a process keeps crashing, up to the cap, one log line per restart', async () => {
    const { supervisor, logger } = start({
      processes: [node('gateway', 'crash.mjs')],
      backoff: { initialDelayMs: 10, maxDelayMs: 40, ...noJitter },
    });
    await waitFor(() => logger.messages('warn').length >= 5, 'five crashes');
    const delays = logger.entries
      .filter((entry) => entry.level === 'warn')
      .map((entry) => entry.fields.restartInMs);
    expect(delays.slice(0, 5)).toEqual([10, 20, 40, 40, 40]);
    expect(
      logger
        .messages('warn')
        .slice(0, 5)
        .map((message) => /restart (\d+) in/.exec(message)?.[1]),
    ).toEqual(['1', '2', '3', '4', '5']);
    expect(supervisor.status()[0]!.restarts).toBeGreaterThanOrEqual(4);
  });

  it('starts the delays over once an instance has stayed up resetAfterMs', async () => {
    const counter = join(tempDir(), 'runs');
    const { logger } = start({
      processes: [
        node('users', 'crash.mjs', { env: () => ({ CRASHES: '3', STAY_MS: '1800', COUNTER_FILE: counter }) }),
      ],
      backoff: { initialDelayMs: 10, maxDelayMs: 1000, resetAfterMs: 1500, ...noJitter },
    });
    await waitFor(() => logger.messages('warn').length >= 4, 'three quick crashes and one after a long run');
    const warnings = logger.entries.filter((entry) => entry.level === 'warn').slice(0, 4);
    expect(warnings.map((entry) => entry.fields.restartInMs)).toEqual([10, 20, 40, 10]);
    expect(warnings[3]!.fields.uptimeMs).toBeGreaterThanOrEqual(1500);
  });

  it('stop() sends SIGTERM to every child, waits for them and resolves; it is idempotent and waitForExit() resolves', async () => {
    const { supervisor, logger, stdout } = start({
      processes: [node('orders', 'forever.mjs', { instances: 2 }), node('users', 'forever.mjs')],
    });
    await waitFor(() => stdout.lines().filter((line) => line.includes('ready')).length === 3, 'all ready');
    const pids = supervisor.status().map((instance) => instance.pid!);
    const stopping = supervisor.stop();
    expect(supervisor.stop()).toBe(stopping);
    await stopping;
    await supervisor.waitForExit();
    expect(supervisor.status().map(({ running, pid, restarts }) => ({ running, pid, restarts }))).toEqual(
      Array(3).fill({ running: false, pid: undefined, restarts: 0 }),
    );
    expect(pids.filter(isAlive)).toEqual([]);
    await waitFor(
      () => stdout.lines().filter((line) => line.endsWith('got SIGTERM')).length === 3,
      'each got SIGTERM',
    );
    expect(
      logger.messages('info').filter((message) => message.endsWith('exited with code 0 on stop')),
    ).toHaveLength(3);
    expect(logger.messages('warn')).toEqual([]);
  });

  it('restarts nothing during or after stop(), even children that exit with an error on SIGTERM', async () => {
    const { supervisor, logger, stdout } = start({
      processes: [node('payments', 'forever.mjs', { instances: 2, env: () => ({ EXIT_ON_TERM: '1' }) })],
      backoff: { initialDelayMs: 0, ...noJitter },
    });
    await waitFor(() => stdout.lines().filter((line) => line.includes('ready')).length === 2, 'both ready');
    await supervisor.stop();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(supervisor.status().map(({ running, restarts }) => ({ running, restarts }))).toEqual([
      { running: false, restarts: 0 },
      { running: false, restarts: 0 },
    ]);
    expect(logger.messages('info').filter((message) => message.includes('started'))).toHaveLength(2);
    expect(logger.messages('warn')).toEqual([]);
  });

  it('stop() cancels a restart that is waiting for its backoff', async () => {
    const { supervisor, logger } = start({
      processes: [node('gateway', 'crash.mjs')],
      backoff: { initialDelayMs: 200, ...noJitter },
    });
    await waitFor(() => logger.messages('warn').length === 1, 'the first crash');
    await supervisor.stop();
    await new Promise((resolve) => setTimeout(resolve, 400)); // past the restart that was due
    expect(supervisor.status()[0]).toMatchObject({ running: false, restarts: 0 });
    expect(logger.messages('info').filter((message) => message.includes('started'))).toHaveLength(1);
  });

  it('SIGKILLs a child that ignores SIGTERM once stopTimeoutMs has passed', async () => {
    const { supervisor, logger, stdout } = start({
      processes: [node('stubborn', 'ignore-sigterm.mjs'), node('polite', 'forever.mjs')],
      stopTimeoutMs: 300,
    });
    await waitFor(() => stdout.lines().filter((line) => line.includes('ready')).length === 2, 'both ready');
    const pid = supervisor.status()[0]!.pid!;
    await supervisor.stop();
    expect(isAlive(pid)).toBe(false);
    await waitFor(() => stdout.text().includes('ignoring SIGTERM'), 'it got SIGTERM first');
    expect(logger.messages('warn')).toEqual([
      `stubborn (pid ${pid}) still running 300 ms after SIGTERM; sending SIGKILL`,
    ]);
    expect(logger.messages('info')).toContain(`stubborn (pid ${pid}) was killed by SIGKILL on stop`);
    expect(
      logger
        .messages('info')
        .some((message) => /^polite \(pid \d+\) exited with code 0 on stop$/.test(message)),
    ).toBe(true);
  });

  it('does not restart an instance that exits with one of fatalExitCodes: it stops every other and waitForExit() says which', async () => {
    const { supervisor, logger, stdout } = start({
      processes: [
        node('users', 'forever.mjs', { instances: 2 }),
        node('orders', 'crash.mjs', { env: () => ({ EXIT_CODE: '2', STAY_MS: '300', CRASHES: '0' }) }),
      ],
      backoff: { initialDelayMs: 10, ...noJitter },
      fatalExitCodes: [2],
    });
    await waitFor(() => stdout.lines().filter((line) => line.includes('ready')).length === 2, 'users ready');
    const exit = await supervisor.waitForExit();
    expect(exit).toEqual({ reason: 'fatal-exit', label: 'orders', code: 2 });
    expect(supervisor.status().map(({ label, running, restarts }) => ({ label, running, restarts }))).toEqual(
      [
        { label: 'users#0', running: false, restarts: 0 },
        { label: 'users#1', running: false, restarts: 0 },
        { label: 'orders', running: false, restarts: 0 },
      ],
    );
    expect(logger.messages('error')).toEqual([
      expect.stringMatching(
        /^orders \(pid \d+\) exited with code 2 after \d+\.\d s, which says starting it again cannot help: not restarted; stopping every process$/,
      ),
    ]);
    expect(logger.messages('warn')).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 100)); // past the restart a backoff would bring
    expect(logger.messages('info').filter((message) => message.includes('started'))).toHaveLength(3);
  });

  it('restarts an exit with any other code, and says waitForExit() "stopped" after stop()', async () => {
    const { supervisor, logger } = start({
      processes: [node('orders', 'crash.mjs', { env: () => ({ EXIT_CODE: '1' }) })],
      backoff: { initialDelayMs: 10, ...noJitter },
      fatalExitCodes: [2],
    });
    await waitFor(() => supervisor.status()[0]!.restarts >= 2, 'two restarts');
    expect(logger.messages('error')).toEqual([]);
    await supervisor.stop();
    expect(await supervisor.waitForExit()).toEqual({ reason: 'stopped' });
  });

  it('keeps retrying a command that cannot be started, and still stops', async () => {
    const { supervisor, logger } = start({
      processes: [
        {
          name: 'ghost',
          instances: 1,
          command: join(tempDir(), 'no-such-program'),
          args: [],
          env: () => ({}),
        },
      ],
      backoff: { initialDelayMs: 10, ...noJitter },
    });
    await waitFor(() => logger.messages('warn').length >= 2, 'two attempts');
    expect(logger.messages('error')[0]).toMatch(/^ghost could not be started: .*ENOENT/);
    expect(logger.messages('warn')[0]).toMatch(/^ghost failed to start after \d+\.\d s; restart 1 in 10 ms$/);
    await supervisor.stop();
  });

  it('refuses duplicate or malformed names, instance counts below 1, a bad stop timeout and bad fatal exit codes', () => {
    const spec = node('users', 'forever.mjs');
    const refused = (options: SupervisorOptions): unknown => {
      try {
        startSupervisor(options);
      } catch (error) {
        return error;
      }
      return undefined;
    };
    expect(isInvalidOptionsError(refused({ processes: [spec, spec] }))).toBe(true);
    expect(isInvalidOptionsError(refused({ processes: [{ ...spec, name: 'a#b' }] }))).toBe(true);
    expect(isInvalidOptionsError(refused({ processes: [{ ...spec, instances: 0 }] }))).toBe(true);
    expect(isInvalidOptionsError(refused({ processes: [{ ...spec, instances: 1.5 }] }))).toBe(true);
    expect(isInvalidOptionsError(refused({ processes: [spec], stopTimeoutMs: -1 }))).toBe(true);
    expect(isInvalidOptionsError(refused({ processes: [spec], backoff: { jitter: 2 } }))).toBe(true);
    expect(isInvalidOptionsError(refused({ processes: [spec], fatalExitCodes: [0] }))).toBe(true);
    expect(isInvalidOptionsError(refused({ processes: [spec], fatalExitCodes: [2.5] }))).toBe(true);
  });
});
