import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: { conditions: ['ferry-source'] },
  test: {
    include: ['src/**/*.test.ts', 'examples/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
