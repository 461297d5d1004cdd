import { describe, expectTypeOf, it } from 'vitest';
import type { AmqpTransportOptions } from '../amqp/amqp-transport.js';
import type { AmqpUrlOptions } from '../messaging/amqp-url-options.js';
import type { BusOptions } from '../messaging/bus.js';
import type { PostgresBackendOptions } from '../postgres/postgres-backend.js';
import type { CreateEventStoreOptions } from './create-event-store.js';
import type { PostgresUrlOptions } from './postgres-url-options.js';

/*
 * The cores describe the options a URL passes to an adapter in plain types, so that their
 * declarations never reach a driver's. These checks, run by the type check (`npm run lint`), keep
 * each plain copy exactly equal to the adapter's own options: an option added to an adapter and not
 * to its copy (or the reverse) fails here.
 */
describe('options a URL passes to an adapter', () => {
  it('are the RabbitMQ transport options, but url and logger', () => {
    expectTypeOf<AmqpUrlOptions>().toEqualTypeOf<Omit<AmqpTransportOptions, 'url' | 'logger'>>();
    expectTypeOf<NonNullable<BusOptions['amqp']>>().toEqualTypeOf<AmqpUrlOptions>();
  });

  it('are the PostgreSQL backend options, but url and logger', () => {
    expectTypeOf<PostgresUrlOptions>().toEqualTypeOf<Omit<PostgresBackendOptions, 'url' | 'logger'>>();
    expectTypeOf<NonNullable<CreateEventStoreOptions['postgres']>>().toEqualTypeOf<PostgresUrlOptions>();
  });
});
