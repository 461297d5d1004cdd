import { defineConfig } from 'vitest/config';

/** The shop's end-to-end and chaos suites start whole shops (several processes each): run alone, after the rest. */
const E2E = 'examples/shop/e2e/**/*.test.ts';

export default defineConfig({
  // Tests (examples included) import `ferry` from its sources, not from a build that may be stale.
  resolve: { conditions: ['ferry-source'] },
  ssr: { resolve: { conditions: ['ferry-source'] } },
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: {
          name: 'ferry',
          include: ['src/**/*.test.ts', 'examples/**/*.test.ts'],
          exclude: [E2E, '**/node_modules/**'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'shop-e2e',
          include: [E2E],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
