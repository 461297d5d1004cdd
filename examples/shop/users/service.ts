/**
 * The users service: registers users with unique email addresses and publishes `user.created`
 * through the outbox, in the registration's transaction. Keeps everything as events in `store`
 * (memory, SQLite or PostgreSQL alike).
 */

import Fastify from 'fastify';
import type { Bus, EventStore, Logger, Outbox } from 'ferry';
import { ferryFastify, ferryFastifyOptions } from 'ferry/fastify';
import type { ShopContracts } from '../contracts.js';
import { listen } from '../listen.js';
import { userRoutes } from './routes.js';

export interface UsersServiceOptions {
  /** The bus `outbox` publishes on. */
  readonly bus: Bus<ShopContracts>;
  readonly store: EventStore;
  /** The outbox of `store`: `user.created` commits with the user. */
  readonly outbox: Outbox<ShopContracts>;
  /** @default 0 (a free port) */
  readonly port?: number;
  /** @default '127.0.0.1' */
  readonly host?: string;
  /** For the HTTP server's problems (5xx). @default stderr */
  readonly logger?: Logger;
}

export interface UsersService {
  readonly url: string;
  /** Stops the HTTP server; the bus, store and outbox are the caller's to close. */
  close(): Promise<void>;
}

export async function startUsersService(options: UsersServiceOptions): Promise<UsersService> {
  const ferry = options.logger === undefined ? {} : { logger: options.logger };
  const app = Fastify({ ...ferryFastifyOptions(ferry), bodyLimit: 16 * 1024 });
  ferryFastify(app, {
    ...ferry,
    health: { checks: { outbox: options.outbox.healthCheck(), bus: options.bus.healthCheck() } },
  });
  userRoutes(app, options.store, options.outbox);
  const url = await listen(app, options);
  return {
    url,
    close: () => app.close(),
  };
}
