/**
 * The README's TypeScript examples type-check against the package as it is: an option renamed, a
 * method's result reshaped or an export dropped fails here, not in a reader's editor. Each ```ts
 * block is compiled as a module of its own (imports resolved as a user's are, `ferry` through the
 * package's exports), after a prelude that declares what the README leaves to the reader (`contracts`,
 * `order`, `pool`, …). A new block needs its prelude here: the test names the block that has none.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const REPO = fileURLToPath(new URL('..', import.meta.url));

interface Block {
  /** README line of the block's first line of code (1-based). */
  readonly line: number;
  readonly code: string;
}

/** The ```ts blocks of a Markdown text, each with the line its code starts on. */
function typescriptBlocks(markdown: string): Block[] {
  const blocks: Block[] = [];
  const lines = markdown.split('\n');
  let start = -1;
  for (const [index, text] of lines.entries()) {
    if (start < 0 && /^```(ts|typescript)\s*$/.test(text)) start = index + 1;
    else if (start >= 0 && /^```\s*$/.test(text)) {
      blocks.push({ line: start + 1, code: lines.slice(start, index).join('\n') });
      start = -1;
    }
  }
  return blocks;
}

/** The zod contracts of every message the outbox, inbox and saga examples name. */
const CONTRACTS = `import { z } from 'zod';
const orderId = z.object({ orderId: z.string() });
const contracts = {
  'order.placed': z.object({ orderId: z.string(), total: z.number() }),
  'order.expired': orderId,
  'order.confirmed': orderId,
  'order.cancelled': z.object({ orderId: z.string(), reason: z.string() }),
  'stock.reserve': orderId,
  'stock.reserved': orderId,
  'stock.release': orderId,
  'payment.charge': z.object({ orderId: z.string(), amount: z.number() }),
  'payment.charged': orderId,
  'payment.declined': orderId,
};`;

const SAGA_PRELUDE = `import type { Outbox } from 'ferry';
${CONTRACTS}
declare const outbox: Outbox<typeof contracts>;`;

/**
 * What each block leaves to the reader, by the block's first line. A line `@block:<first line>`
 * stands for that block's code.
 */
const PRELUDES: Readonly<Record<string, string>> = {
  "import { createBus, MemoryInbox } from 'ferry';": '',
  "const dead = await bus.listDeadLetters({ group: 'payments', limit: 20 });": `import type { Bus } from 'ferry';
declare const bus: Bus;`,
  "import { createEventStore, isConcurrencyError } from 'ferry';": '',
  "import { createBus, createEventStore, createOutbox } from 'ferry';": `${CONTRACTS}
declare const id: string;
declare const order: { total: number };`,
  'await bus.subscribe(': `import type { Bus, Outbox } from 'ferry';
${CONTRACTS}
declare const bus: Bus<typeof contracts>;
declare const outbox: Outbox<typeof contracts>;
declare const qty: number;
declare const productId: string;`,
  "import { defineSaga, startSaga } from 'ferry';": SAGA_PRELUDE,
  // The saga of the example before it, as written there.
  "import { createTestHarness, handlerSpec, sagaSpec } from 'ferry/testing';": `import { expect } from 'vitest';
${SAGA_PRELUDE}
@block:import { defineSaga, startSaga } from 'ferry';`,
  "import { ServiceClient, isHttpError, isCircuitOpenError } from 'ferry';": `interface User { readonly id: string }
declare const order: { id: string };
declare const log: { warn(message: string): void };`,
  "import { compose, timeout, retry, circuitBreaker, bulkhead, RetryBudget } from 'ferry';":
    'declare function fetchSomething(options: { signal: AbortSignal }): Promise<string>;',
  "import Fastify from 'fastify';": `import type { ServiceClient } from 'ferry';
declare const pool: { query(sql: string): Promise<unknown> };
declare const users: ServiceClient;
declare function placeOrder(body: unknown, options: { signal: AbortSignal }): Promise<unknown>;`,
};

function firstLine(block: Block): string {
  return block.code.split('\n')[0] ?? '';
}

function preludeOf(block: Block, blocks: readonly Block[]): string {
  return (PRELUDES[firstLine(block)] ?? '')
    .split('\n')
    .map((line) => {
      if (!line.startsWith('@block:')) return line;
      const named = blocks.find((other) => firstLine(other) === line.slice('@block:'.length));
      if (named === undefined) throw new Error(`no README block begins with ${line.slice('@block:'.length)}`);
      return named.code;
    })
    .join('\n');
}

/** Compiles each block (prelude, then its code) as a module in the repository; the errors, by README line. */
function typeErrors(blocks: readonly Block[], all: readonly Block[] = blocks): string[] {
  const config = ts.getParsedCommandLineOfConfigFile(
    join(REPO, 'tsconfig.json'),
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (diagnostic) => {
        throw new Error(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n'));
      },
    },
  );
  if (config === undefined) throw new Error('tsconfig.json could not be read');
  const options: ts.CompilerOptions = { ...config.options, noEmit: true, types: ['node'] };
  // Virtual files beside the package's own, so that `ferry` resolves through its exports.
  const files = new Map<string, { text: string; block: Block; preludeLines: number }>();
  for (const block of blocks) {
    const prelude = preludeOf(block, all);
    const text = `${prelude}\n${block.code}\nexport {};\n`;
    files.set(join(REPO, `readme-line-${block.line}.ts`), {
      text,
      block,
      preludeLines: prelude.split('\n').length,
    });
  }
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (fileName, languageVersion, onError) => {
    const file = files.get(fileName);
    return file === undefined
      ? getSourceFile(fileName, languageVersion, onError)
      : ts.createSourceFile(fileName, file.text, languageVersion, true);
  };
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (fileName) => files.has(fileName) || fileExists(fileName);
  const program = ts.createProgram([...files.keys()], options, host);
  const errors: string[] = [];
  for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
    const file = diagnostic.file === undefined ? undefined : files.get(diagnostic.file.fileName);
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
    if (file === undefined || diagnostic.file === undefined || diagnostic.start === undefined) {
      errors.push(`${diagnostic.file?.fileName ?? '(no file)'}: ${message}`);
      continue;
    }
    const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
    const inBlock = line - file.preludeLines;
    errors.push(
      inBlock < 0
        ? `prelude of the block at README line ${file.block.line}: ${message}`
        : `README.md:${file.block.line + inBlock}: ${message}`,
    );
  }
  return errors;
}

describe('README examples', () => {
  const blocks = typescriptBlocks(readFileSync(join(REPO, 'README.md'), 'utf8'));

  it('are all known here, each with what it leaves to the reader', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(10);
    const unknown = blocks
      .filter((block) => !Object.hasOwn(PRELUDES, firstLine(block)))
      .map((block) => `README.md:${block.line}: ${firstLine(block)}`);
    expect(unknown).toEqual([]);
  });

  it('type-check against the package', { timeout: 120_000 }, () => {
    expect(typeErrors(blocks)).toEqual([]);
  });

  it('a wrong option in an example is caught, at its README line', { timeout: 120_000 }, () => {
    const block = blocks.find(
      (b) => firstLine(b) === "import { createEventStore, isConcurrencyError } from 'ferry';",
    );
    if (block === undefined) throw new Error('the event store example is gone');
    const code = block.code.replace("expectedVersion: 'no_stream'", "expectedVersion: 'none'");
    expect(code).not.toBe(block.code);
    const line = block.line + block.code.split('\n').findIndex((text) => text.includes("'no_stream'"));
    expect(typeErrors([{ line: block.line, code }], blocks)).toEqual([
      `README.md:${line}: Type '"none"' is not assignable to type 'ExpectedVersion | undefined'.`,
    ]);
  });
});
