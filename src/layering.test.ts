import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * The layers of `src/`, lowest first. A file may import from its own directory and from any lower
 * layer, never from a higher one; a core or an adapter never imports a sibling of its own layer:
 * - generic helpers know nothing of messaging, event stores or HTTP (they may build on each other);
 * - a core (bus, event store, HTTP) names no adapter, not even for a type, and no other core;
 * - an adapter implements a core's interface and names no other adapter;
 * - `connect/` (URL selection), `testing/` and the entry points sit above everything.
 * Test files and their fixtures are exempt: they wire a core to every adapter on purpose.
 */
const LAYERS: readonly (readonly string[])[] = [
  ['errors', 'time', 'context', 'ids', 'logging', 'url', 'validation', 'resilience', 'inbox'],
  ['messaging', 'eventstore', 'http'],
  // The outbox joins the bus and the event store (units of work, relay, transactional inbox); sagas
  // build on it. Adapters implement its storage interface.
  ['outbox'],
  ['saga'],
  ['amqp', 'postgres', 'sqlite', 'nats'],
  ['connect', 'testing', '.'],
];

const CORES = LAYERS.findIndex((dirs) => dirs.includes('messaging'));
const ADAPTERS = LAYERS.findIndex((dirs) => dirs.includes('amqp'));

/** Only adapters (and the test helpers above them) load a driver. */
const DRIVERS = ['amqplib', 'pg', 'better-sqlite3', 'nats'];

const SRC = dirname(fileURLToPath(import.meta.url));

function layerOf(dir: string): number {
  const layer = LAYERS.findIndex((dirs) => dirs.includes(dir));
  if (layer < 0) throw new Error(`src/${dir} has no layer: add it to LAYERS in layering.test.ts`);
  return layer;
}

/** The directory right under `src/` that holds `file`, or `.` for a file of `src/` itself. */
function topDir(file: string): string {
  const parts = relative(SRC, file).split(sep);
  return parts.length === 1 ? '.' : parts[0]!;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'fixtures' ? [] : sourceFiles(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts') ? [path] : [];
  });
}

/** Every module a file names: static imports, `import type`, `export … from` and `import()`. */
function specifiersOf(source: string): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const found: string[] = [];
  const patterns = [
    /\b(?:import|export)\b[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]/g,
    /\bimport\s*['"]([^'"]+)['"]/g,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  for (const pattern of patterns) for (const match of code.matchAll(pattern)) found.push(match[1]!);
  return found;
}

interface Violation {
  readonly file: string;
  readonly imports: string;
  readonly why: string;
}

function violationsOf(file: string): Violation[] {
  const from = topDir(file);
  const layer = layerOf(from);
  const out: Violation[] = [];
  for (const specifier of specifiersOf(readFileSync(file, 'utf8'))) {
    const name = relative(SRC, file);
    if (!specifier.startsWith('.')) {
      const pkg = specifier.startsWith('@')
        ? specifier.split('/').slice(0, 2).join('/')
        : specifier.split('/')[0]!;
      if (DRIVERS.includes(pkg) && layer < ADAPTERS) {
        out.push({ file: name, imports: specifier, why: 'only an adapter loads a driver' });
      }
      continue;
    }
    const to = topDir(resolve(dirname(file), specifier));
    if (to === from) continue;
    const target = layerOf(to);
    if (target > layer) {
      out.push({ file: name, imports: specifier, why: `src/${from} sits below src/${to}` });
    } else if (target === layer && (layer === CORES || layer === ADAPTERS)) {
      out.push({ file: name, imports: specifier, why: `src/${from} and src/${to} are siblings` });
    }
  }
  return out;
}

describe('layering of src/', () => {
  it('reads every kind of import', () => {
    const source = `
      import { a } from '../amqp/a.js';
      import type {
        B,
      } from '../postgres/b.js';
      export { c } from '../sqlite/c.js';
      export type { D } from './d.js';
      import './side-effect.js';
      const e = await import('../amqp/e.js');
      // import { f } from '../commented/out.js';
    `;
    expect(specifiersOf(source)).toEqual([
      '../amqp/a.js',
      '../postgres/b.js',
      '../sqlite/c.js',
      './d.js',
      './side-effect.js',
      '../amqp/e.js',
    ]);
  });

  it('has no import from a higher layer or a sibling', () => {
    const violations = sourceFiles(SRC).flatMap(violationsOf);
    expect(violations).toEqual([]);
  });
});
