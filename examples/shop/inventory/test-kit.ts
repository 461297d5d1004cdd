/** What the inventory tests share: a service on a bus and store of its own, and ways to drive it. */
import { randomUUID } from 'node:crypto';
import {
  type Bus,
  createBus,
  createEventStore,
  createOutbox,
  type DataIn,
  type EventStore,
  type Message,
  type Outbox,
  silentLogger,
} from 'ferry';
import { waitFor } from 'ferry/testing';
import { afterEach, expect } from 'vitest';
import { type ShopContracts, shopContracts } from '../contracts.js';
import { type InventoryService, startInventoryService } from './service.js';

export const ADMIN = 'test-admin-token';

export interface Setup {
  bus: Bus<ShopContracts>;
  store: EventStore;
  outbox: Outbox<ShopContracts>;
  inventory: InventoryService;
  /** Replies and updates inventory published, in arrival order. */
  seen: Message[];
  /** Publishes a command to inventory and waits until inventory has handled it (`times` deliveries of its id). */
  send<K extends 'inventory.reserve' | 'inventory.release' | 'inventory.commit'>(
    type: K,
    data: DataIn<ShopContracts, K>,
    options?: { id?: string; times?: number },
  ): Promise<void>;
  of(type: string, orderId?: string): Message[];
  /** Deliveries to inventory whose handler failed (a lost race past `maxRetries`, say), so far. */
  failures(): number;
  close(): Promise<void>;
}

export const orderIdOf = (m: Message) => (m.data as { orderId: string }).orderId;

export const opened: Setup[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
});

export async function setup(
  storeUrl = `memory://inventory-${randomUUID()}`,
  tuning: { concurrency?: number; maxRetries?: number } = {},
): Promise<Setup> {
  const store = await createEventStore({ url: storeUrl });
  const handled = new Map<string, number>();
  let failures = 0;
  const bus = await createBus({
    url: `memory://inventory-${randomUUID()}`,
    service: 'inventory',
    contracts: shopContracts,
    logger: silentLogger,
    // Counts the deliveries inventory finished (its unit of work committed, or the message was a duplicate).
    middleware: [
      (next, { group }) =>
        async (message) => {
          try {
            await next(message);
          } catch (error) {
            if (group === 'inventory') failures++;
            throw error;
          }
          if (group === 'inventory') handled.set(message.id, (handled.get(message.id) ?? 0) + 1);
        },
    ],
  });
  const outbox = await createOutbox({
    store,
    bus,
    logger: silentLogger,
    ...(tuning.maxRetries === undefined ? {} : { maxRetries: tuning.maxRetries }),
  });
  const seen: Message[] = [];
  const watch = await Promise.all(
    ['inventory.reserved', 'inventory.unavailable', 'inventory.updated'].map((type) =>
      bus.subscribe(type, (m) => void seen.push(m as Message), { group: 'test', concurrency: 100 }),
    ),
  );
  const inventory = await startInventoryService({
    bus,
    store,
    outbox,
    adminToken: ADMIN,
    logger: silentLogger,
    ...(tuning.concurrency === undefined ? {} : { concurrency: tuning.concurrency }),
  });
  const setup: Setup = {
    bus,
    store,
    outbox,
    inventory,
    seen,
    async send(type, data, { id = randomUUID(), times = 1 } = {}) {
      await bus.publish(type, data, { id });
      await waitFor(() => (handled.get(id) ?? 0) >= times, `${type} ${id} handled`);
    },
    failures: () => failures,
    of: (type, orderId) =>
      seen.filter(
        (m) =>
          m.type === type && (orderId === undefined || (m.data as { orderId?: string }).orderId === orderId),
      ),
    async close() {
      await inventory.close();
      // The outbox before the test's subscriptions: at close it waits (up to 5 s) for what it sent
      // to be handled, which a closed subscription never does.
      await outbox.close();
      await Promise.all(watch.map((s) => s.close()));
      await bus.close();
      await store.close();
    },
  };
  opened.push(setup);
  return setup;
}

export async function product(s: Setup, id: string) {
  const res = await fetch(`${s.inventory.url}/products/${id}`);
  expect(res.status).toBe(200);
  return (await res.json()) as { id: string; name: string; price: number; stock: number; reserved: number };
}

export const createProduct = (
  s: Setup,
  body: unknown,
  headers: Record<string, string> = { authorization: `Bearer ${ADMIN}` },
) =>
  fetch(`${s.inventory.url}/products`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });

/** Waits until every inventory message sent so far is handled and every reply published. */
export async function settled(
  s: Setup,
  condition: () => boolean,
  what: string | (() => string),
  timeoutMs = 20_000,
) {
  await waitFor(condition, what, timeoutMs);
  await s.outbox.flush();
}
