import { afterEach, expect, it } from 'vitest';
import { createTestVhost, type TestVhost } from '../../src/testing/rabbitmq.js';
import { runExample } from '../run-example.js';

const runDemo = (env: NodeJS.ProcessEnv, interruptAt?: string) =>
  runExample(new URL('./main.ts', import.meta.url), env, interruptAt);

let vhost: TestVhost | undefined;
afterEach(async () => {
  await vhost?.dispose();
  vhost = undefined;
});

it('demo:bus on RabbitMQ, after a run interrupted with its poison message dead-lettered, replays only its own', async () => {
  // Must not happen: the second run replaying the first run's dead letter and never showing its own
  // (the poison charged twice), or a run interrupted with Ctrl-C ending in a stack trace.
  vhost = await createTestVhost('ferry-bus-demo');
  const first = await runDemo({ BUS_URL: vhost.url }, 'dead-lettering message');
  expect(first.code, first.out).toBe(130);
  expect(first.out).toContain('SIGINT: closing the buses');
  expect(first.out).not.toMatch(/\n\s+at /);

  const second = await runDemo({ BUS_URL: vhost.url });
  expect(second.code, second.out).toBe(0);
  expect(second.out).toMatch(/dead letter \w+: order\.created after 3 attempts/);
  expect(second.out.match(/charged 9\.5 for poison/g)).toHaveLength(1);
  expect(second.out).toContain(
    'dead letters of this run left in group payments: 0 (and 1 of earlier runs, left in place)',
  );
  expect(second.out).not.toContain('guest:guest');
}, 120_000);
