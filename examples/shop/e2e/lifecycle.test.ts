/**
 * The shop's life as an operator meets it: stopped through npm (whose SIGTERM reaches the shell it
 * ran the script in, not the shop), stopped with orders in flight, and refusing a configuration it
 * cannot use with one line and exit code 2 instead of being restarted forever.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestVhost, rabbitmqBaseUrl, type TestVhost, waitFor } from 'ferry/testing';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePorts } from '../supervisor/free-port.js';
import { chaosCatalog, expectEverythingAddsUp, placeOrders } from './chaos-kit.js';
import { type Answer, ShopClient } from './shop-client.js';
import { sqliteStoredOrders } from './shops.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const entry = (name: string) => fileURLToPath(new URL(`../${name}`, import.meta.url));
const TOKEN = 'lifecycle-admin-token';
const PG_ADMIN_URL = process.env.FERRY_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

interface Launched {
  readonly child: ChildProcess;
  /** stdout and stderr, interleaved as they came. */
  output(): string;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exit: Promise<number | null>;
}

const launched: Launched[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const { child } of launched.splice(0)) {
    // Whatever is left of each process group: the test has failed already.
    if (child.pid !== undefined && (await groupMembers(child.pid)).length > 0) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }
  }
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

/** The environment of a shell that runs npm: none of the npm_* variables of an `npm test` around us. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!/^npm_/i.test(key)) env[key] = value;
  return { ...env, LOG_LEVEL: 'warn', FERRY_ADMIN_TOKEN: TOKEN, ...extra };
}

/** Starts `command` in a process group of its own (so that the test can find all it started). */
function launch(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  user: { readonly uid?: number; readonly gid?: number } = {},
): Launched {
  const child = spawn(command, args, {
    cwd: ROOT,
    env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...user,
  });
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-100_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const started = { child, output: () => output, exit };
  launched.push(started);
  return started;
}

const shop = (file: string, env: NodeJS.ProcessEnv, user?: { readonly uid: number; readonly gid: number }) =>
  launch(process.execPath, ['--conditions=ferry-source', '--import', 'tsx', entry(file)], env, user);

/** Live (not zombie) processes of process group `pgid`, from /proc. */
async function groupMembers(pgid: number): Promise<number[]> {
  const members: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    // pid (comm) state ppid pgrp …: comm may hold spaces, so split after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] !== 'Z' && Number(fields[2]) === pgid) members.push(Number(name));
  }
  return members;
}

/**
 * Live processes of process group `pgid` running the shop service `service` (SHOP_SERVICE): the
 * node processes of service-main.ts, not what they start with that environment (tsx's esbuild).
 */
async function serviceProcesses(pgid: number, service: string): Promise<number[]> {
  const found: number[] = [];
  for (const pid of await groupMembers(pgid)) {
    const environ = await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '');
    const command = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (environ.split('\0').includes(`SHOP_SERVICE=${service}`) && command.includes('service-main.ts')) {
      found.push(pid);
    }
  }
  return found;
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

async function untilHealthy(started: Launched, port: number, timeoutMs: number): Promise<void> {
  await waitFor(
    async () => {
      if (started.child.exitCode !== null) throw new Error(`exited: ${started.output()}`);
      return (await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined))?.status === 200;
    },
    () => `the shop to be ready on port ${port}; its output:\n${started.output().slice(-5000)}`,
    timeoutMs,
  );
}

/** After `signal` to the npm process: nothing it started is left, and the port is free, within 10 s. */
async function expectGoneWithin10s(started: Launched, port: number): Promise<void> {
  const pgid = started.child.pid as number;
  const deadline = Date.now() + 10_000;
  let left: number[] = [];
  let free = false;
  while (Date.now() < deadline) {
    left = await groupMembers(pgid);
    free = await portIsFree(port);
    if (left.length === 0 && free) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const commands = await Promise.all(
    left.map(
      async (pid) =>
        `${pid} ${(await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).replaceAll('\0', ' ')}`,
    ),
  );
  expect({ left: commands, portFree: free, output: started.output().slice(-3000) }).toEqual({
    left: [],
    portFree: true,
    output: expect.any(String),
  });
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-shop-lifecycle-'));
  dirs.push(dir);
  return dir;
}

describe('npm start', () => {
  it.each(['SIGTERM', 'SIGINT', 'SIGKILL'] as const)(
    'stops the whole shop when the npm process gets %s: the port is free and no process is left within 10 s',
    async (signal) => {
      const [port] = (await freePorts(1)) as [number];
      const npm = launch('npm', ['start'], cleanEnv({ FERRY_DATA_DIR: await tempDir(), PORT: String(port) }));
      await untilHealthy(npm, port, 60_000);
      npm.child.kill(signal);
      await expectGoneWithin10s(npm, port);
    },
    90_000,
  );
});

describe('the embedded shop, SIGTERMed while it starts', () => {
  it('finishes starting, then stops cleanly: exit code 0, its lock file removed, no banner', async () => {
    // Must not happen: the default action of the signal (killed, exit code null) with the SQLite
    // files being opened and the lock file left behind.
    const dataDir = await tempDir();
    const [port] = (await freePorts(1)) as [number];
    const running = shop(
      'main.ts',
      cleanEnv({ FERRY_DATA_DIR: dataDir, PORT: String(port), LOG_LEVEL: 'info' }),
    );
    // The lock is taken at the start of the start, after the signal handlers are in place.
    await waitFor(
      async () => (await readdir(dataDir)).includes('shop.pid'),
      () => `the shop to take its lock; its output:\n${running.output()}`,
      60_000,
    );
    running.child.kill('SIGTERM');
    expect(await running.exit, running.output()).toBe(0);
    expect(running.output()).toContain('SIGTERM: stopping');
    expect(running.output()).not.toContain('is ready at');
    expect(await readdir(dataDir)).not.toContain('shop.pid');
  }, 90_000);
});

describe('the shop, once the reader of its output is gone (| head, a log shipper restarting)', () => {
  it('embedded: runs on, and stops cleanly on SIGTERM (writing to the closed pipe ended it with code 1)', async () => {
    const dataDir = await tempDir();
    const [port] = (await freePorts(1)) as [number];
    const running = shop(
      'main.ts',
      cleanEnv({ FERRY_DATA_DIR: dataDir, PORT: String(port), LOG_LEVEL: 'info' }),
    );
    await untilHealthy(running, port, 60_000);
    running.child.stdout?.destroy();
    running.child.stderr?.destroy();
    // Something to say: a user registered, then the stop itself ("SIGTERM: stopping").
    const client = new ShopClient(`http://127.0.0.1:${port}`, TOKEN);
    expect((await client.createUser()).id).toEqual(expect.any(String));
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
    running.child.kill('SIGTERM');
    expect(await running.exit).toBe(0);
  }, 90_000);
});

describe('the embedded shop, SIGTERMed while clients hold connections that sent nothing or part of a request', () => {
  it('cuts them and exits 0 in a second or two, not after its 10 s limit', async () => {
    const [port] = (await freePorts(1)) as [number];
    const running = shop('main.ts', cleanEnv({ FERRY_DATA_DIR: await tempDir(), PORT: String(port) }));
    await untilHealthy(running, port, 60_000);
    const held = await Promise.all(
      [
        '',
        'POST /orders HTTP/1.1\r\nHost: x\r\n',
        'POST /orders HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n{',
      ].map(async (bytes) => {
        const socket = connect(port, '127.0.0.1');
        socket.on('error', () => {});
        await once(socket, 'connect');
        if (bytes !== '') socket.write(bytes);
        return socket;
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    const started = Date.now();
    running.child.kill('SIGTERM');
    const code = await running.exit;
    expect({ code, ms: Date.now() - started }, running.output()).toEqual({ code: 0, ms: expect.any(Number) });
    expect(Date.now() - started, running.output()).toBeLessThan(4000);
    expect(running.output()).not.toContain('exiting anyway');
    for (const socket of held) socket.destroy();
  }, 90_000);
});

describe('the embedded shop, given a data folder it cannot use', () => {
  it.each([
    [
      'under a file',
      async () => {
        const file = join(await tempDir(), 'a-file');
        await writeFile(file, 'not a folder');
        return join(file, 'data');
      },
    ],
    // Node's recursive mkdir tries again forever there: the shop hung without a word.
    ['under /proc, which answers ENOENT to new entries', async () => '/proc/ferry-no-such/data'],
    // Both passed the check and failed when SQLite opened its file: exit 1, the variable unnamed.
    ['a regular file', regularFile],
    ['a folder that takes no new files (/proc)', async () => '/proc'],
  ])(
    'stops at once with code 2 and one line naming FERRY_DATA_DIR (%s)',
    async (_, dataDir) => {
      const [port] = (await freePorts(1)) as [number];
      const main = shop('main.ts', cleanEnv({ FERRY_DATA_DIR: await dataDir(), PORT: String(port) }));
      expect(await main.exit).toBe(2);
      expect(main.output()).toMatch(/^The shop could not start: FERRY_DATA_DIR \S+ cannot be used: /);
    },
    60_000,
  );
});

describe('the embedded shop, given a data folder on a disk with 1 MiB free', () => {
  it('stops at once with code 2 and one line naming FERRY_DATA_DIR and the space, leaving no file there', async () => {
    const dir = await tempDir();
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir]);
    try {
      const [port] = (await freePorts(1)) as [number];
      const main = shop('main.ts', cleanEnv({ FERRY_DATA_DIR: dir, PORT: String(port) }));
      expect(await main.exit, main.output()).toBe(2);
      expect(main.output().trim().split('\n')).toEqual([
        `The shop could not start: FERRY_DATA_DIR ${dir} cannot be used: its disk has 1.0 MiB free, the shop needs at least 32 MiB`,
      ]);
      expect(await readdir(dir)).toEqual([]);
    } finally {
      execFileSync('umount', [dir]);
    }
  }, 60_000);
});

describe('the embedded shop, when its disk fills while it runs', () => {
  it('answers 507 STORAGE_FULL (then 503 "failing" once the gateway stops calling), never a 201 for an order it did not keep; takes orders again once there is room', async () => {
    const dir = await tempDir();
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', dir]);
    let running: Launched | undefined;
    try {
      const [port] = (await freePorts(1)) as [number];
      running = shop('main.ts', cleanEnv({ FERRY_DATA_DIR: dir, PORT: String(port) }));
      await untilHealthy(running, port, 60_000);
      const client = new ShopClient(`http://127.0.0.1:${port}`, TOKEN);
      const user = await client.createUser();
      const order = (key: string) =>
        client.call<{ id: string; code?: string; detail?: string }>(
          'POST',
          '/orders',
          { userId: user.id, items: [{ productId: 'green-tea', quantity: 1 }] },
          { 'idempotency-key': key },
        );
      expect((await order('before')).status).toBe(201);
      // Fills the disk (dd stops at ENOSPC).
      try {
        execFileSync('dd', ['if=/dev/zero', `of=${join(dir, 'filler')}`, 'bs=64k'], { stdio: 'ignore' });
      } catch {
        // No space left on device: what it was for.
      }
      const statuses: number[] = [];
      const answers: { status: number; code?: string | undefined; detail?: string | undefined }[] = [];
      for (let i = 0; i < 30; i++) {
        const answer = await order(`full-${i}`);
        statuses.push(answer.status);
        answers.push({ status: answer.status, code: answer.body.code, detail: answer.body.detail });
      }
      expect(statuses).not.toContain(201);
      expect(statuses).not.toContain(500);
      expect(answers[0]).toMatchObject({ status: 507, code: 'STORAGE_FULL' });
      // The health report says why, for the operator (it answered 200 while every order failed).
      // A report is reused for up to 500 ms: the one from before the disk filled may still answer.
      type Report = { status: string; checks: Record<string, { status: string; error?: string }> };
      let sick: Answer<Report> | undefined;
      await waitFor(
        async () => {
          sick = await client.call<Report>('GET', '/health');
          if (sick.status === 503) return true;
          await new Promise((resolve) => setTimeout(resolve, 100));
          return false;
        },
        () => `GET /health to answer 503 once the disk is full; last answer ${JSON.stringify(sick)}`,
        3_000,
      );
      expect((sick as Answer<Report>).body.checks.disk).toMatchObject({
        status: 'fail',
        error: expect.stringMatching(/^the data folder's disk has 0\.0 MiB free, less than the 16 MiB/),
      });
      for (const answer of answers) {
        if (answer.status === 507) expect(answer.code).toBe('STORAGE_FULL');
        else {
          expect(answer.status).toBe(503);
          expect(answer.detail).toMatch(/orders service is failing just now/);
        }
      }

      await rm(join(dir, 'filler'));
      // Room again: the breaker closes within its reset time, the same keys place their orders.
      let placed: Answer | undefined;
      await waitFor(
        async () => {
          placed = await order('full-0');
          if (placed.status === 201) return true;
          await new Promise((resolve) => setTimeout(resolve, 250));
          return false;
        },
        () => `an order to be taken once the disk has room; last answer ${JSON.stringify(placed)}`,
        20_000,
      );
      const ids = [(placed as Answer<{ id: string }>).body.id];
      for (let i = 1; i < 30; i++) {
        const again = await order(`full-${i}`);
        expect(again.status).toBe(201);
        ids.push((again.body as { id: string }).id);
      }
      expect(new Set(ids).size).toBe(30);
      for (const id of ids) expect((await client.settled(id)).status).toBe('confirmed');
      await waitFor(
        async () => (await client.call('GET', '/health')).status === 200,
        'GET /health to answer 200 again once the disk has room',
        10_000,
      );
      running.child.kill('SIGTERM');
      expect(await running.exit).toBe(0);
    } finally {
      running?.child.kill('SIGKILL');
      await running?.exit;
      execFileSync('umount', ['-l', dir]);
    }
  }, 180_000);
});

describe('the embedded shop, given an admin-token that is a folder', () => {
  it('stops at once with code 2 and one line naming the file', async () => {
    const dataDir = await tempDir();
    await mkdir(join(dataDir, 'admin-token'));
    const [port] = (await freePorts(1)) as [number];
    const main = shop(
      'main.ts',
      cleanEnv({ FERRY_DATA_DIR: dataDir, PORT: String(port), FERRY_ADMIN_TOKEN: '' }),
    );
    expect(await main.exit).toBe(2);
    expect(main.output().trim().split('\n')).toEqual([
      expect.stringMatching(
        new RegExp(
          `^The shop could not start: the admin token file ${join(dataDir, 'admin-token')} cannot be read \\(`,
        ),
      ),
    ]);
  }, 60_000);
});

describe('the embedded shop, given an admin-token file edited into a token no client can send', () => {
  it('stops at once with code 2 and one line naming the file, not printing what it holds', async () => {
    const dataDir = await tempDir();
    await writeFile(join(dataDir, 'admin-token'), 'two words\n');
    const [port] = (await freePorts(1)) as [number];
    // At the default LOG_LEVEL (info): nothing else is said before the refusal.
    const main = shop(
      'main.ts',
      cleanEnv({ FERRY_DATA_DIR: dataDir, PORT: String(port), FERRY_ADMIN_TOKEN: '', LOG_LEVEL: 'info' }),
    );
    expect(await main.exit).toBe(2);
    expect(main.output().trim().split('\n')).toEqual([
      `The shop could not start: the admin token kept in ${join(dataDir, 'admin-token')} must be 1 to 1024 visible ASCII characters (no spaces): correct it, delete the file to have one generated, or set FERRY_ADMIN_TOKEN`,
    ]);
  }, 60_000);
});

describe('the embedded shop without FERRY_ADMIN_TOKEN', () => {
  /** Starts main.ts on `dataDir`, returns its banner's admin token line, and stops it. */
  async function bannerTokenLine(dataDir: string): Promise<string> {
    const [port] = (await freePorts(1)) as [number];
    const main = shop(
      'main.ts',
      cleanEnv({ FERRY_DATA_DIR: dataDir, PORT: String(port), FERRY_ADMIN_TOKEN: '' }),
    );
    await waitFor(
      async () => {
        if (main.child.exitCode !== null) throw new Error(`exited: ${main.output()}`);
        return /admin token: .*\n/.test(main.output());
      },
      () => `the banner; the output:\n${main.output()}`,
      60_000,
    );
    main.child.kill('SIGTERM');
    expect(await main.exit).toBe(0);
    return /admin token: (.*)\n/.exec(main.output())?.[1] ?? '';
  }

  it('says where the token it prints comes from: generated on the first start, then the file, a hand-written one included', async () => {
    const dataDir = await tempDir();
    const first = await bannerTokenLine(dataDir);
    const token = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
    expect(first).toBe(
      `${token}   (generated, kept in ${dataDir}/admin-token; set FERRY_ADMIN_TOKEN to choose one)`,
    );
    expect(await bannerTokenLine(dataDir)).toBe(
      `${token}   (from ${dataDir}/admin-token; set FERRY_ADMIN_TOKEN to choose another)`,
    );
    await writeFile(join(dataDir, 'admin-token'), 'written-by-hand\n');
    expect(await bannerTokenLine(dataDir)).toBe(
      `written-by-hand   (from ${dataDir}/admin-token; set FERRY_ADMIN_TOKEN to choose another)`,
    );
  }, 120_000);
});

describe('the embedded shop, given a data folder another shop runs on', () => {
  it('stops with code 2 and one line naming FERRY_DATA_DIR and that shop; takes the folder once that shop is SIGKILLed', async () => {
    const dataDir = await tempDir();
    const [port, other] = (await freePorts(2)) as [number, number];
    const first = shop('main.ts', cleanEnv({ FERRY_DATA_DIR: dataDir, PORT: String(port) }));
    await untilHealthy(first, port, 60_000);
    const second = shop('main.ts', cleanEnv({ FERRY_DATA_DIR: dataDir, PORT: String(other) }));
    expect(await second.exit).toBe(2);
    expect(second.output().trim().split('\n')).toEqual([
      `The shop could not start: FERRY_DATA_DIR ${dataDir} is in use by another shop (process ${first.child.pid}): stop it, or set FERRY_DATA_DIR to another folder`,
    ]);
    // The first runs on, untouched.
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
    first.child.kill('SIGKILL');
    await first.exit;
    const third = shop('main.ts', cleanEnv({ FERRY_DATA_DIR: dataDir, PORT: String(other) }));
    await untilHealthy(third, other, 60_000);
    third.child.kill('SIGTERM');
    expect(await third.exit).toBe(0);
    // Released on the way out.
    expect(await readdir(dataDir)).not.toContain('shop.pid');
  }, 180_000);
});

/** A regular file, given as the data folder. */
async function regularFile(): Promise<string> {
  const file = join(await tempDir(), 'a-file');
  await writeFile(file, 'not a folder');
  return file;
}

describe('the embedded shop, given a PORT another program listens on', () => {
  it('stops before starting anything, with code 2 and one line naming PORT', async () => {
    const [port] = (await freePorts(1)) as [number];
    const other = createHttpServer((_req, res) => res.end('{"status":"ok"}'));
    await new Promise<void>((resolve) => other.listen(port, '127.0.0.1', resolve));
    try {
      const dataDir = await tempDir();
      const main = shop('main.ts', cleanEnv({ FERRY_DATA_DIR: dataDir, PORT: String(port) }));
      expect(await main.exit).toBe(2);
      expect(main.output().trim().split('\n')).toEqual([
        `The shop could not start: PORT ${port} is in use by another program: set PORT to another one, e.g. PORT=3001 npm start`,
      ]);
      // Nothing was started: no service opened its store.
      expect(await readdir(dataDir)).toEqual([]);
    } finally {
      await new Promise((resolve) => other.close(resolve));
    }
  }, 60_000);
});

describe('the embedded shop, run by a user who may not bind its PORT', () => {
  it('stops before starting anything, with code 2 and one line naming PORT', async () => {
    const dataDir = await tempDir();
    await chmod(dataDir, 0o777);
    // Not root: port 80 needs a privilege this user lacks (it got exit 1 and a bare "listen EACCES").
    const nobody = { uid: 65534, gid: 65534 };
    const main = shop('main.ts', cleanEnv({ FERRY_DATA_DIR: dataDir, PORT: '80', HOME: dataDir }), nobody);
    expect(await main.exit).toBe(2);
    expect(main.output().trim().split('\n')).toEqual([
      'The shop could not start: PORT 80 may not be used by this user (ports below 1024 need privileges): set PORT to another one, e.g. PORT=3001 npm start',
    ]);
  }, 60_000);
});

describe('the embedded shop, SIGTERMed with 50 orders in flight', () => {
  it('exits 0 well within 5 s, and every order answered 201 ends after a restart on the same data', async () => {
    const dataDir = await tempDir();
    const [port] = (await freePorts(1)) as [number];
    const env = cleanEnv({ FERRY_DATA_DIR: dataDir, PORT: String(port) });
    let running = shop('main.ts', env);
    await untilHealthy(running, port, 60_000);
    const client = new ShopClient(`http://127.0.0.1:${port}`, TOKEN);
    const catalog = await chaosCatalog(client);

    let stopped: { code: number | null; ms: number } | undefined;
    const { accepted } = await placeOrders(
      client,
      catalog,
      50,
      async () => {
        const started = Date.now();
        running.child.kill('SIGTERM');
        stopped = { code: await running.exit, ms: Date.now() - started };
      },
      50,
    );
    expect(stopped, running.output()).toEqual({ code: 0, ms: expect.any(Number) });
    expect(stopped?.ms, running.output()).toBeLessThan(5000);
    expect(running.output()).not.toContain('exiting anyway');
    expect(accepted.length).toBeGreaterThan(0);

    running = shop('main.ts', env);
    await untilHealthy(running, port, 60_000);
    const stored = sqliteStoredOrders(dataDir);
    expect(stored).toEqual(expect.arrayContaining(accepted));
    await expectEverythingAddsUp(client, stored, catalog);
    running.child.kill('SIGTERM');
    expect(await running.exit).toBe(0);
  }, 240_000);
});

describe('the distributed shop', () => {
  let vhost: TestVhost;
  let database: string;
  let dbUrl: string;

  beforeAll(async () => {
    vhost = await createTestVhost('ferry-shop-lifecycle');
    database = `ferry_lifecycle_${randomUUID().slice(0, 8)}`;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${database}`);
    await admin.end();
    const url = new URL(PG_ADMIN_URL);
    url.pathname = `/${database}`;
    dbUrl = url.toString();
  }, 60_000);

  afterAll(async () => {
    await vhost?.dispose();
    if (database === undefined) return;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin.end();
  }, 60_000);

  const distributedEnv = async (extra: Record<string, string> = {}) => {
    const [port] = (await freePorts(1)) as [number];
    const env = cleanEnv({
      FERRY_DATA_DIR: await tempDir(),
      PORT: String(port),
      FERRY_BUS_URL: vhost.url,
      FERRY_DB_URL: dbUrl,
      ...extra,
    });
    return { port, env };
  };

  it('refuses a second shop on the same database, or on the same vhost, with exit code 2 and one line naming the variable', async () => {
    // Must not happen: two shops sharing their messages, one's payments charging the other's orders.
    const first = await distributedEnv();
    const running = shop('distributed.ts', first.env);
    await untilHealthy(running, first.port, 150_000);
    const sameDatabase = await distributedEnv();
    const second = shop('distributed.ts', sameDatabase.env);
    expect(await second.exit, second.output()).toBe(2);
    expect(second.output().trim().split('\n')).toEqual([
      expect.stringMatching(/^The shop could not start: FERRY_DB_URL names a database another shop runs on/),
    ]);
    const otherDatabase = new URL(dbUrl);
    otherDatabase.pathname = '/postgres';
    const sameVhost = await distributedEnv({ FERRY_DB_URL: otherDatabase.toString() });
    const third = shop('distributed.ts', sameVhost.env);
    expect(await third.exit, third.output()).toBe(2);
    expect(third.output().trim().split('\n')).toEqual([
      expect.stringMatching(
        /^The shop could not start: FERRY_BUS_URL names a RabbitMQ vhost another shop runs on/,
      ),
    ]);
    // The first shop ran on, untouched.
    expect((await fetch(`http://127.0.0.1:${first.port}/health`)).status).toBe(200);
    running.child.kill('SIGTERM');
    expect(await running.exit, running.output()).toBe(0);
  }, 240_000);

  it('keeps supervising once the reader of its output is gone: a killed service is restarted', async () => {
    // Must not happen: the supervisor ending on EPIPE as it reports the exit, and the shop with it.
    const { port, env } = await distributedEnv({ LOG_LEVEL: 'info' });
    const supervisor = shop('distributed.ts', env);
    await untilHealthy(supervisor, port, 150_000);
    supervisor.child.stdout?.destroy();
    supervisor.child.stderr?.destroy();
    const payments = await serviceProcesses(supervisor.child.pid as number, 'payments');
    expect(
      payments,
      `payments processes among ${await groupMembers(supervisor.child.pid as number)}`,
    ).toHaveLength(1);
    process.kill(payments[0] as number, 'SIGKILL');
    await waitFor(
      async () => {
        const now = await serviceProcesses(supervisor.child.pid as number, 'payments');
        return now.length === 1 && now[0] !== payments[0];
      },
      'payments to be restarted',
      30_000,
    );
    expect(supervisor.child.exitCode, supervisor.output()).toBeNull();
    await untilHealthy(supervisor, port, 60_000);
    supervisor.child.kill('SIGTERM');
    expect(await supervisor.exit, supervisor.output()).toBe(0);
  }, 240_000);

  it('answers GET /health 503 naming the bus while RabbitMQ refuses its services, 200 again once it takes them back', async () => {
    // It answered 200 for a minute (until an outbox message aged) while no service had a broker
    // connection. Must not be lost: an order placed before the cut ends once the broker is back.
    const { port, env } = await distributedEnv();
    const supervisor = shop('distributed.ts', env);
    await untilHealthy(supervisor, port, 150_000);
    const client = new ShopClient(`http://127.0.0.1:${port}`, TOKEN);
    const user = await client.createUser();
    const product = await client.addProduct(10);
    const rabbitmqctl = (...args: string[]) => execFileSync('rabbitmqctl', args, { stdio: 'ignore' });
    try {
      rabbitmqctl('clear_permissions', '-p', vhost.name, 'guest');
      await vhost.closeConnections();
      const order = await client.order(user.id, [{ productId: product.id, quantity: 1 }]);
      type Report = { checks: Record<string, { status: string; error?: string }> };
      let report: Answer<Report> | undefined;
      await waitFor(
        async () => {
          report = await client.call<Report>('GET', '/health');
          return report.status === 503 && JSON.stringify(report.body).includes('failing: bus');
        },
        () => `GET /health to answer 503 naming the bus; last answer ${JSON.stringify(report)}`,
        20_000,
      );
      rabbitmqctl('set_permissions', '-p', vhost.name, 'guest', '.*', '.*', '.*');
      await untilHealthy(supervisor, port, 60_000);
      expect((await client.settled(order.id, 60_000)).status).toBe('confirmed');
    } finally {
      rabbitmqctl('set_permissions', '-p', vhost.name, 'guest', '.*', '.*', '.*');
    }
    supervisor.child.kill('SIGTERM');
    expect(await supervisor.exit, supervisor.output()).toBe(0);
  }, 300_000);

  it.each(['SIGTERM', 'SIGINT'] as const)(
    'npm run start:distributed stops every process when the npm process gets %s',
    async (signal) => {
      const { port, env } = await distributedEnv();
      const npm = launch('npm', ['run', 'start:distributed'], env);
      await untilHealthy(npm, port, 150_000);
      npm.child.kill(signal);
      await expectGoneWithin10s(npm, port);
    },
    240_000,
  );

  // The provider's ledger is kept there: refused by that process alone, it was restarted forever.
  it.each([
    ['a regular file', regularFile],
    ['a folder that takes no new files (/proc)', async () => '/proc'],
  ])(
    'refuses a FERRY_DATA_DIR that is %s before starting anything: one line naming it, exit code 2',
    async (_, dataDir) => {
      const { env } = await distributedEnv({ FERRY_DATA_DIR: await dataDir() });
      const supervisor = shop('distributed.ts', env);
      expect(await supervisor.exit).toBe(2);
      expect(supervisor.output().trim().split('\n')).toEqual([
        expect.stringMatching(/^The shop could not start: FERRY_DATA_DIR \S+ cannot be used: /),
      ]);
    },
    60_000,
  );

  // Every service refused it as it started, with exit code 1: the supervisor restarted them for ever.
  it('refuses a FERRY_BUS_URL the bus would refuse before starting anything: one line naming it, exit code 2', async () => {
    const { env } = await distributedEnv({ FERRY_BUS_URL: 'amqp://guest:S3cr3t%zz@127.0.0.1:5672/shop' });
    const supervisor = shop('distributed.ts', env);
    expect(await supervisor.exit).toBe(2);
    expect(supervisor.output().trim().split('\n')).toEqual([
      expect.stringMatching(
        /^The shop could not start: FERRY_BUS_URL: the password of the bus URL .*:\*\*\*@/,
      ),
    ]);
    expect(supervisor.output()).not.toContain('S3cr3t');
  }, 60_000);

  it('stops every process with exit code 2 when the services refuse the FERRY_DB_URL as a configuration error', async () => {
    const { env } = await distributedEnv();
    const db = new URL(env.FERRY_DB_URL as string);
    db.searchParams.set('poolSize', '2');
    const supervisor = shop('distributed.ts', { ...env, FERRY_DB_URL: db.toString() });
    expect(await supervisor.exit, supervisor.output()).toBe(2);
    expect(supervisor.output()).toMatch(/poolSize, which is not read from the URL/);
    expect(supervisor.output()).toMatch(/exited with code 2 .*not restarted; stopping every process/);
    expect(supervisor.output().match(/could not start/g)?.length ?? 0).toBeLessThan(8);
  }, 90_000);

  it.each([
    ['SHOP_ORDER_TIMEOUT_MS', 'abc'],
    ['SHOP_PAYMENT_GIVE_UP_MS', '0'],
    ['PORT', '-1'],
    // The supervisor waits for the gateway on PORT: on a port the kernel picks it never said ready.
    ['PORT', '0'],
  ])(
    'refuses %s=%s before starting anything: one line naming it, exit code 2',
    async (name, value) => {
      const { env } = await distributedEnv({ [name]: value });
      const supervisor = shop('distributed.ts', env);
      expect(await supervisor.exit).toBe(2);
      const lines = supervisor.output().trim().split('\n');
      expect(lines).toEqual([
        expect.stringMatching(new RegExp(`^The shop could not start: ${name} must be .*${value}`)),
      ]);
    },
    60_000,
  );

  it('refuses a PORT another program answers on, before starting anything (it passed for the gateway)', async () => {
    const { port, env } = await distributedEnv();
    const other = createHttpServer((_req, res) => res.end('{"status":"ok"}'));
    await new Promise<void>((resolve) => other.listen(port, '127.0.0.1', resolve));
    try {
      const supervisor = launch(
        process.execPath,
        ['--conditions=ferry-source', '--import', 'tsx', entry('distributed.ts')],
        env,
      );
      expect(await supervisor.exit).toBe(2);
      expect(supervisor.output().trim().split('\n')).toEqual([
        `The shop could not start: PORT ${port} is in use by another program: set PORT to another one, e.g. PORT=3001 npm run start:distributed`,
      ]);
    } finally {
      await new Promise((resolve) => other.close(resolve));
    }
  }, 60_000);

  it('refuses a bad --instances the same way', async () => {
    const { env } = await distributedEnv();
    const supervisor = launch(
      process.execPath,
      ['--conditions=ferry-source', '--import', 'tsx', entry('distributed.ts'), '--instances', 'payments=0'],
      env,
    );
    expect(await supervisor.exit).toBe(2);
    expect(supervisor.output().trim().split('\n')).toEqual([
      expect.stringMatching(/^The shop could not start: --instances: the count of 'payments' must be/),
    ]);
  }, 60_000);

  it.each([
    ['SHOP_ORDER_TIMEOUT_MS', '-5', 'orders'],
    ['SHOP_PAYMENT_GIVE_UP_MS', 'soon', 'payments'],
  ])(
    'a service given %s=%s exits with code 2 and one line naming it',
    async (name, value, service) => {
      const { env } = await distributedEnv({
        [name]: value,
        SHOP_SERVICE: service,
        SHOP_PORT: '0',
        SHOP_TOPOLOGY: '{}',
      });
      const main = shop('service-main.ts', env);
      expect(await main.exit).toBe(2);
      expect(main.output()).toBe(
        `${service} could not start: ${name} must be a whole number of milliseconds from 1 to 2147483647, not "${value}"\n`,
      );
    },
    60_000,
  );

  it('a service whose PostgreSQL database does not exist exits with code 2, saying so', async () => {
    const missing = `ferry_missing_${randomUUID().slice(0, 8)}`;
    const url = new URL(dbUrl);
    url.pathname = `/${missing}`;
    const { env } = await distributedEnv({
      FERRY_DB_URL: url.toString(),
      SHOP_SERVICE: 'users',
      SHOP_PORT: '0',
      SHOP_TOPOLOGY: '{}',
    });
    const main = shop('service-main.ts', env);
    expect(await main.exit).toBe(2);
    expect(main.output()).toMatch(
      new RegExp(`^users could not start: .*database "${missing}" does not exist\\n$`),
    );
  }, 60_000);

  it('with a wrong RabbitMQ password, says the broker refused the login (never the password) and stops with code 2 instead of restarting', async () => {
    const password = `wrong-${randomUUID()}`;
    const busUrl = new URL(rabbitmqBaseUrl());
    busUrl.password = password;
    const { port, env } = await distributedEnv({ FERRY_BUS_URL: busUrl.toString() });
    const supervisor = shop('distributed.ts', env);
    const code = await Promise.race([
      supervisor.exit,
      new Promise((resolve) => setTimeout(() => resolve('still running after 150 s'), 150_000)),
    ]);
    const output = supervisor.output();
    expect(code, output).toBe(2);
    expect(output).toMatch(
      /\| \w+ could not start: RabbitMQ at amqps?:\/\/[^@\s]*:\*\*\*@\S* refused the login/,
    );
    expect(output).toMatch(/The shop stopped: \w+ exited with code 2, a configuration error/);
    expect(output).not.toContain(password);
    expect(output).not.toContain('ETIMEDOUT');
    expect(output).not.toMatch(/restart \d+ in/);
    await expectGoneWithin10s(supervisor, port);
  }, 200_000);
});
