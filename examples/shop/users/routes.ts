/** `POST /users` and `GET /users/:id`; every error is a problem+json document (ferry/fastify). */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import {
  bulkhead,
  CommandHandler,
  type EventStore,
  HttpProblemError,
  type Outbox,
  validateRequest,
} from 'ferry';
import { z } from 'zod';
import type { ShopContracts } from '../contracts.js';
import { keyedId, keyReused } from '../keyed-id.js';
import { printable } from '../text.js';
import {
  EmailTakenError,
  emailDecider,
  emailStream,
  isUserId,
  normalizeEmail,
  type User,
  UserExistsError,
  userDecider,
  userStream,
} from './user.js';

export const newUser = z.strictObject({
  name: printable(z.string().trim().min(1).max(200)),
  email: z.string().trim().max(254).pipe(z.email()).refine(fitsMailLimits, {
    message:
      'Invalid email address: a local part of at most 64 characters, domain labels of at most 63 that neither start nor end with a hyphen',
  }),
});

/**
 * What no mail server takes (RFC 5321 4.5.3.1.1, RFC 1035 2.3.1 and 2.3.4), which z.email() lets
 * through: a local part over 64 octets, a domain label over 63 or ending with a hyphen.
 */
function fitsMailLimits(email: string): boolean {
  const at = email.lastIndexOf('@');
  const local = email.slice(0, at);
  return (
    Buffer.byteLength(local) <= 64 &&
    email
      .slice(at + 1)
      .split('.')
      .every((label) => label.length <= 63 && !label.startsWith('-') && !label.endsWith('-'))
  );
}

/** What the README promises every public POST: a JSON body of up to 1 MB. */
const BODY_LIMIT = 1_048_576;

export function userRoutes(app: FastifyInstance, store: EventStore, outbox: Outbox<ShopContracts>): void {
  const users = new CommandHandler(store, userDecider);
  const emails = new CommandHandler(store, emailDecider);
  // A unit of work holds a connection of the store's pool (PostgreSQL: 10) while handleIn reads the
  // streams through another: with as many registrations in flight as the pool has connections, each
  // would wait for a second one that never comes free. A few at a time, the others queued.
  const writes = bulkhead({ maxConcurrent: 4, maxQueue: 1000 });

  app.post('/users', { bodyLimit: BODY_LIMIT }, async (request, reply) => {
    // With an Idempotency-Key, the key names the user: sent again, the registration finds the user
    // its key registered (the email claim is the same, the user's stream is there).
    const keyed = keyedId(request, 'shop-user');
    const { name, email } = await validateRequest(newUser, request.body, 'body');
    const user: User = { id: keyed ?? randomUUID(), name, email, createdAt: new Date().toISOString() };
    try {
      // The claim, the user and user.created commit together; a claim lost to a concurrent
      // registration reruns the unit of work, which then finds the address taken.
      await writes.execute(() =>
        outbox.unitOfWork(async (work) => {
          await emails.handleIn(work, emailStream(email), {
            type: 'Claim',
            email: normalizeEmail(email),
            userId: user.id,
          });
          await users.handleIn(work, userStream(user.id), { type: 'Register', ...user });
          await work.publish(
            'user.created',
            { userId: user.id, name, email, createdAt: user.createdAt },
            { key: user.id },
          );
        }),
      );
    } catch (error) {
      if (keyed !== undefined && (error instanceof UserExistsError || error instanceof EmailTakenError)) {
        const registered = (await users.load(userStream(keyed))).state.user;
        if (registered !== undefined) {
          if (registered.name !== name || registered.email !== email) throw keyReused('user');
          // Members in the first answer's order, whatever order the store keeps them in (jsonb).
          const { id, createdAt } = registered;
          return reply
            .code(201)
            .header('location', `/users/${id}`)
            .header('idempotent-replayed', 'true')
            .send({ id, name, email, createdAt });
        }
      }
      if (error instanceof EmailTakenError) {
        throw new HttpProblemError(409, undefined, {
          detail: 'A user with this email is registered already.',
        });
      }
      throw error;
    }
    return reply.code(201).header('location', `/users/${user.id}`).send(user);
  });

  app.get<{ Params: { id: string } }>('/users/:id', async (request) => {
    const { id } = request.params;
    const state = isUserId(id) ? (await users.load(userStream(id))).state : {};
    if (state.user === undefined) throw new HttpProblemError(404, undefined, { detail: 'No such user.' });
    return state.user;
  });
}
