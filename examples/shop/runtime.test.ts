import { describe, expect, it } from 'vitest';
import { DEFAULT_ORDER_SAGA_OPTIONS } from './orders/order-saga.js';
import { DISTRIBUTED_RELAY_OPTIONS, DISTRIBUTED_STORE_OPTIONS } from './runtime.js';
import { DEFAULT_RESTART_BACKOFF } from './supervisor/index.js';

describe('the distributed outbox relay', () => {
  it('sends again the messages of a process that died well within the order deadline', () => {
    // A process killed between publishing and deleting its outbox rows: the supervisor restarts it
    // (first delay), and its relay sends them again once their lease ends. With the library's 30 s
    // lease that took the whole order deadline, and the order ended `timeout`.
    const resent = DEFAULT_RESTART_BACKOFF.initialDelayMs + DISTRIBUTED_RELAY_OPTIONS.leaseMs;
    expect(resent).toBeLessThanOrEqual(DEFAULT_ORDER_SAGA_OPTIONS.timeoutMs / 2);
    // A live relay's publish ends (confirmed or timed out) before its lease: no other relay takes
    // rows it is still sending.
    expect(DISTRIBUTED_RELAY_OPTIONS.publishTimeoutMs).toBeLessThan(DISTRIBUTED_RELAY_OPTIONS.leaseMs);
  });
});

describe('the distributed event stores', () => {
  it("end a stopped process's transaction, and free its locks, well within the order deadline", () => {
    // A unit of work of a stopped instance (SIGSTOP) holds its stock locks until the server ends its
    // idle transaction, after statementTimeoutMs; the other instances' orders wait behind it.
    expect(DISTRIBUTED_STORE_OPTIONS.statementTimeoutMs).toBeGreaterThan(0);
    expect(DISTRIBUTED_STORE_OPTIONS.statementTimeoutMs).toBeLessThanOrEqual(
      DEFAULT_ORDER_SAGA_OPTIONS.timeoutMs / 2,
    );
  });
});
