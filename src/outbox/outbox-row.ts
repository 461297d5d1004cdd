import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';
import { isStorableText } from '../errors/storable-text.js';
import type { Bus } from '../messaging/bus.js';
import { PUBLISH_OPTION_NAMES } from '../messaging/bus.js';
import type { Contracts, DataIn, TypeOf } from '../messaging/contracts.js';
import type { OutboxInsert } from './storage.js';
import type { OutboxPublishOptions } from './unit-of-work.js';

/** Longest partition key, in UTF-16 code units. */
export const MAX_OUTBOX_KEY_LENGTH = 500;

/**
 * The outbox row of a message: its envelope checked and built by the bus as `publish` would (id,
 * time, correlation and causation from the ambient context), due at `dueAt`.
 */
/** What `work.publish` reads: `publish`'s options and the outbox's `key`. */
const OUTBOX_PUBLISH_OPTION_NAMES = [...PUBLISH_OPTION_NAMES, 'key'];

export async function outboxRow<C extends Contracts>(
  bus: Bus<C>,
  type: string,
  data: unknown,
  options: OutboxPublishOptions,
  dueAt: number,
  now: number,
): Promise<OutboxInsert> {
  // A misspelt `kye` would lose the per-key order without a word.
  checkOptions('work.publish', options, OUTBOX_PUBLISH_OPTION_NAMES);
  const { key, ...publishOptions } = options;
  // No NUL (PostgreSQL text cannot hold it) nor lone surrogate (PostgreSQL would keep U+FFFD, merging
  // 'k-\uD800' and 'k-\uDBFF'): the key is a column of the outbox on every store.
  if (
    key !== undefined &&
    (typeof key !== 'string' ||
      key.length === 0 ||
      key.length > MAX_OUTBOX_KEY_LENGTH ||
      !isStorableText(key))
  ) {
    throw new InvalidOptionsError(
      `key must be a non-empty string of at most ${MAX_OUTBOX_KEY_LENGTH} characters, without NUL or lone surrogates`,
    );
  }
  const envelope = await bus.envelopeOf(type as TypeOf<C>, data as DataIn<C, TypeOf<C>>, publishOptions);
  return {
    id: envelope.id,
    key: key ?? envelope.id,
    envelope: JSON.stringify(envelope),
    dueAt,
    createdAt: now,
  };
}
