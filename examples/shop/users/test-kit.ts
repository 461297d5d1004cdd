/** What the users tests share: a service on a bus and store of its own, and ways to drive it. */
import { randomUUID } from 'node:crypto';
import { createBus, createEventStore, createOutbox, type Message, silentLogger } from 'ferry';
import { afterEach } from 'vitest';
import { shopContracts } from '../contracts.js';
import { startUsersService } from './service.js';

export const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of cleanups.splice(0).reverse()) await close();
});

export async function setup(storeUrl = `memory://users-${randomUUID()}`) {
  const store = await createEventStore({ url: storeUrl });
  const bus = await createBus({
    url: `memory://users-${randomUUID()}`,
    service: 'users',
    contracts: shopContracts,
    logger: silentLogger,
  });
  const outbox = await createOutbox({ store, bus, logger: silentLogger });
  const created: Message[] = [];
  const sub = await bus.subscribe('user.created', (m) => void created.push(m as Message), { group: 'test' });
  const users = await startUsersService({ bus, store, outbox, logger: silentLogger });
  cleanups.push(async () => {
    await users.close();
    // The outbox before the test's subscription: at close it waits (up to 5 s) for what it sent to
    // be handled, which a closed subscription never does.
    await outbox.close();
    await sub.close();
    await bus.close();
    await store.close();
  });
  const post = (body: unknown, contentType = 'application/json', headers: Record<string, string> = {}) =>
    fetch(`${users.url}/users`, {
      method: 'POST',
      headers: { 'content-type': contentType, ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
  const events = async () => {
    const all = [];
    for await (const e of store.readAll()) all.push(e);
    return all;
  };
  return { users, outbox, created, post, events };
}
