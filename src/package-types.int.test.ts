import { execFile } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * What a user gets from `npm install ferry`: the package is built and packed as it would be published,
 * installed into a fresh project without its optional peers (amqplib, pg, better-sqlite3, zod) and
 * type-checked with `skipLibCheck: false`, so every declaration the entry point reaches is checked.
 * Needs npm and its cache or the registry (for undici and @types/node), hence `.int`.
 */

const run = promisify(execFile);
const REPO = fileURLToPath(new URL('..', import.meta.url));
const TSC = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const NPM_INSTALL = [
  'install',
  '--no-audit',
  '--no-fund',
  '--prefer-offline',
  '--ignore-scripts',
  '--omit=optional',
];
const STEP_TIMEOUT_MS = 180_000;

/** Runs a command; a failure throws with what it printed, which is the useful part for tsc and npm. */
async function step(command: string, args: readonly string[], cwd: string): Promise<void> {
  try {
    await run(command, args, { cwd, timeout: STEP_TIMEOUT_MS });
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`${command} ${args.join(' ')} failed:\n${stdout ?? ''}${stderr ?? ''}`, { cause: error });
  }
}

let root: string;
let tarball: string;

/** A project that depends on the packed ferry (and `extra` packages), with a strict tsconfig. */
async function consumerProject(name: string, extra: Record<string, string>, source: string): Promise<string> {
  const dir = join(root, name);
  mkdirSync(dir);
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({
      name,
      private: true,
      type: 'module',
      dependencies: { ferry: `file:${tarball}`, '@types/node': installedVersion('@types/node'), ...extra },
    }),
  );
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        lib: ['ES2023'],
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        exactOptionalPropertyTypes: true,
        noUncheckedIndexedAccess: true,
        skipLibCheck: false,
        noEmit: true,
        types: ['node'],
      },
      files: ['consumer.ts'],
    }),
  );
  writeFileSync(join(dir, 'consumer.ts'), source);
  await step('npm', NPM_INSTALL, dir);
  return dir;
}

/** tsc's diagnostics for the project in `dir`; empty when it type-checks. */
async function typeCheck(dir: string): Promise<string> {
  try {
    await run(process.execPath, [TSC, '-p', join(dir, 'tsconfig.json')], {
      cwd: dir,
      timeout: STEP_TIMEOUT_MS,
    });
    return '';
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    return `${stdout ?? ''}${stderr ?? ''}`.trim() || String(error);
  }
}

/** The version of a package the repository has installed. */
function installedVersion(name: string): string {
  const manifest = JSON.parse(readFileSync(join(REPO, 'node_modules', name, 'package.json'), 'utf8'));
  return (manifest as { version: string }).version;
}

describe('the packed package', () => {
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'ferry-package-types-'));
    // Built and packed from a copy, so the repository's own dist/ is neither needed nor touched.
    const pkg = join(root, 'package');
    mkdirSync(pkg);
    for (const file of ['package.json', 'README.md', 'CHANGELOG.md'])
      copyFileSync(join(REPO, file), join(pkg, file));
    await step(
      process.execPath,
      [TSC, '-p', join(REPO, 'tsconfig.build.json'), '--outDir', join(pkg, 'dist'), '--sourceMap', 'false'],
      REPO,
    );
    await step('npm', ['pack', '--pack-destination', root], pkg);
    const packed = readdirSync(root).find((file) => file.endsWith('.tgz'));
    if (packed === undefined) throw new Error(`npm pack left no tarball in ${root}`);
    tarball = join(root, packed);
  }, 2 * STEP_TIMEOUT_MS);

  afterAll(() => {
    if (root !== undefined) rmSync(root, { recursive: true, force: true });
  });

  it(
    'type-checks a consumer of `ferry` that installs none of the optional peers',
    async () => {
      const dir = await consumerProject(
        'root-consumer',
        {},
        `import {
  type Bus,
  type BusOptions,
  type CreateEventStoreOptions,
  createBus,
  createEventStore,
  EventStore,
  MemoryTransport,
  ServiceClient,
  silentLogger,
} from 'ferry';

const options: BusOptions = { url: 'memory://', service: 'probe', logger: silentLogger, amqp: { publishWindow: 10 } };
const bus: Bus = await createBus(options);
await bus.close();
const storeOptions: CreateEventStoreOptions = { url: 'memory://', postgres: { schema: 'probe' } };
const store: EventStore = await createEventStore(storeOptions);
await store.close();
const client = new ServiceClient('http://127.0.0.1:1', { retry: false });
void client;
void MemoryTransport;
`,
      );
      for (const peer of ['amqplib', 'pg', '@types/pg', 'better-sqlite3']) {
        // An optional peer must not come in with the package.
        expect(existsSync(join(dir, 'node_modules', peer)), peer).toBe(false);
      }
      expect(await typeCheck(dir)).toBe('');
    },
    3 * STEP_TIMEOUT_MS,
  );

  it(
    'type-checks a consumer of `ferry/amqp` that installs amqplib',
    async () => {
      const dir = await consumerProject(
        'amqp-consumer',
        { amqplib: installedVersion('amqplib') },
        `import { createBus } from 'ferry';
import { AmqpTransport } from 'ferry/amqp';

const transport = new AmqpTransport({ url: 'amqp://guest:guest@127.0.0.1:5672', publishWindow: 10 });
const bus = await createBus({ transport, service: 'probe' });
await bus.close();
`,
      );
      expect(await typeCheck(dir)).toBe('');
    },
    3 * STEP_TIMEOUT_MS,
  );
});
