import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Tests (examples included) import `ferry` from its sources, not from a build that may be stale.
  resolve: { conditions: ['ferry-source'] },
  ssr: { resolve: { conditions: ['ferry-source'] } },
  test: {
    include: ['src/**/*.test.ts', 'examples/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
