import { optionalPeer } from './optional-peer.js';

/**
 * vitest, loaded when `ferry/testing` is: an optional peer, needed by the contract suites only. A
 * project without it still uses the rest of `ferry/testing` (FaultProxy, FaultServer, the harness,
 * the specs); a contract suite called there throws `DEPENDENCY_MISSING`, which says what to install.
 */
export const vitest: (suite: string) => typeof import('vitest') = await optionalPeer(
  () => import('vitest'),
  (suite) =>
    `${suite} is a vitest suite, and vitest could not be loaded: install it (npm install --save-dev vitest), and run the suite with vitest`,
);

/**
 * zod, loaded when `ferry/testing` is: the transport and outbox suites check message contracts with
 * a zod schema. Without it the rest of `ferry/testing` loads; those suites throw `DEPENDENCY_MISSING`.
 */
export const zod: (suite: string) => typeof import('zod') = await optionalPeer(
  () => import('zod'),
  (suite) =>
    `${suite} checks message contracts with zod, and zod could not be loaded: install it (npm install --save-dev zod)`,
);
