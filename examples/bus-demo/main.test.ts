import { expect, it } from 'vitest';
import { runExample } from '../run-example.js';

const runDemo = (env: NodeJS.ProcessEnv, interruptAt?: string) =>
  runExample(new URL('./main.ts', import.meta.url), env, interruptAt);

it('npm run demo:bus tells the story it promises: a retry, a dead letter inspected and replayed, nothing left', async () => {
  const { code, out } = await runDemo({ BUS_URL: '' });
  expect(code, out).toBe(0);
  expect(out).toMatch(/payments {3}failed once on order\.created .*attempt 1\)/);
  expect(out).toMatch(/payments {3}charged 19 for A-1 on order\.created .*attempt 2\)/);
  expect(out).toMatch(
    /payments {3}dead letter \w+: order\.created after 3 attempts — card processor rejects this order/,
  );
  expect(out.match(/charged 9\.5 for poison/g)).toHaveLength(1);
  expect(out).toMatch(/refused an invalid order before sending it/);
  expect(out).toContain('dead letters of this run left in group payments: 0\n');
  expect(out).toContain('all buses closed cleanly');
}, 60_000);
