import { expect, it } from 'vitest';
import { runExample } from '../run-example.js';

it('npm run demo:http tells the story it promises: one charge, 504 at the deadline, then an open breaker', async () => {
  const { code, out } = await runExample(new URL('./main.ts', import.meta.url));
  expect(code, out).toBe(0);
  const lines = out.split('\n');
  const section = (title: string) => {
    const start = lines.findIndex((l) => l.startsWith(`— ${title}`));
    const end = lines.findIndex((l, i) => i > start && l.startsWith('— '));
    return lines.slice(start, end < 0 ? undefined : end).join('\n');
  };
  expect(section('Retry')).toMatch(/retrying POST \/charges \(attempt 2\)/);
  expect(section('Retry')).toMatch(/client {4}200 .*"chargeId":"ch_1"/);
  // Both ends hold the same deadline: payments stops on its own timer or when orders, whose call
  // ends at that same instant, drops the connection, whichever comes first.
  expect(section('Deadline')).toMatch(
    /payments {2}stopped: (the caller's deadline passed|the client closed the connection)/,
  );
  expect(section('Deadline')).toMatch(/client {4}504 Gateway Timeout/);
  // The budget shrinks at each hop: orders works 40 ms before it calls payments.
  expect(section('Deadline')).toMatch(/gateway {3}checkout: orders gets 300 ms/);
  const ordersLeft = Number(/orders {4}placing an order, with (\d+) ms left/.exec(section('Deadline'))?.[1]);
  const paymentsLeft = Number(/payments {2}working, with (\d+) ms left/.exec(section('Deadline'))?.[1]);
  expect(ordersLeft).toBeGreaterThan(200);
  expect(ordersLeft - paymentsLeft).toBeGreaterThanOrEqual(39);
  expect(section('Breaker: payments is down (1)')).toMatch(/breaker payments: closed -> open/);
  expect(section('Breaker: payments is down (3)')).toMatch(/refused at once: CIRCUIT_OPEN/);
  expect(section('Breaker: payments is down (3)')).toMatch(/client {4}503 Service Unavailable/);
  expect(out).toMatch(/GET \/health\/ready -> 503 .*breaker:payments/);
  expect(out).toMatch(/payments charged 1 time\(s\) in all/);
}, 60_000);
