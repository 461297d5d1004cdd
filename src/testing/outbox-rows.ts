import { prepareAppend } from '../eventstore/prepare-append.js';
import type { PreparedEvent } from '../eventstore/types.js';
import { uuidv7 } from '../ids/uuidv7.js';
import type { OutboxInsert } from '../outbox/storage.js';

/** The time outbox storage tests run at: passed as `now`, so no real clock is involved. */
export const OUTBOX_T0 = Date.UTC(2026, 0, 1);

/** An outbox row for storage tests: its own key unless given, due at `dueAt`, created at {@link OUTBOX_T0}. */
export function outboxTestRow(key?: string, dueAt = OUTBOX_T0, id = uuidv7()): OutboxInsert {
  return {
    id,
    key: key ?? id,
    envelope: JSON.stringify({ id, type: 'test.sent', data: { key } }),
    dueAt,
    createdAt: OUTBOX_T0,
  };
}

/** Events of these types, prepared as a store prepares an append (for a storage's `append`). */
export function preparedTestEvents(...types: string[]): readonly PreparedEvent[] {
  return prepareAppend(
    'ignored',
    types.map((type) => ({ type, data: { type } })),
    undefined,
  ).events;
}
