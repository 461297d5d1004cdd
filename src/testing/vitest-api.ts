import { FerryError } from '../errors/ferry-error.js';

type Vitest = typeof import('vitest');

/**
 * vitest, loaded when `ferry/testing` is: an optional peer, needed by the contract suites only. A
 * project without it still uses the rest of `ferry/testing` (FaultProxy, FaultServer, the harness,
 * the specs); a contract suite called there throws {@link vitest}'s error, which says what to install.
 */
let loaded: Vitest | undefined;
let failure: unknown;
try {
  loaded = await import('vitest');
} catch (error) {
  failure = error;
}

/** The vitest API, or `DEPENDENCY_MISSING` naming the suite that needs it. */
export function vitest(suite: string): Vitest {
  if (loaded !== undefined) return loaded;
  throw new FerryError(
    'DEPENDENCY_MISSING',
    `${suite} is a vitest suite, and vitest could not be loaded: install it (npm install --save-dev vitest), and run the suite with vitest`,
    { cause: failure },
  );
}
