import { DuplicateMessageIdError } from '../outbox/errors.js';
import type { OutboxInsert } from '../outbox/storage.js';

/** PostgreSQL's name for the unique constraint of the outbox's `id` column (migration 5). */
const OUTBOX_ID_KEY = 'outbox_id_key';

/**
 * `DuplicateMessageIdError` for a unique violation of the outbox's message id while inserting
 * `messages` (the id as PostgreSQL names it in the error's detail, else the first id repeated among
 * them, else the first); `undefined` for any other error.
 */
export function duplicateMessageId(
  error: unknown,
  messages: readonly OutboxInsert[],
): DuplicateMessageIdError | undefined {
  const { code, constraint, detail } = (error ?? {}) as {
    code?: unknown;
    constraint?: unknown;
    detail?: unknown;
  };
  if (code !== '23505' || constraint !== OUTBOX_ID_KEY) return undefined;
  const named =
    typeof detail === 'string' ? /^Key \(id\)=\((.*)\) already exists\.$/s.exec(detail)?.[1] : undefined;
  const ids = messages.map((m) => m.id);
  const repeated = ids.find((id, i) => ids.indexOf(id) !== i);
  return new DuplicateMessageIdError(named ?? repeated ?? ids[0] ?? '', { cause: error });
}
