import type { Inbox, InboxClaim } from '../inbox/inbox.js';
import { EventStoreClosedError } from './errors.js';

/**
 * `inbox` refusing, once its store is closed, to begin (`begin`) or record (`complete`) with
 * `EventStoreClosedError`, as the durable backends' do by themselves: the memory backend's inbox is
 * shared by every store on it and outlives any one of them.
 */
export function closingInbox(inbox: Inbox, closed: () => boolean): Inbox {
  return {
    async begin(key: string): Promise<InboxClaim | null> {
      if (closed()) throw new EventStoreClosedError();
      const claim = await inbox.begin(key);
      if (claim === null) return null;
      return {
        signal: claim.signal,
        complete: async () => {
          if (closed()) throw new EventStoreClosedError();
          return claim.complete();
        },
        abandon: () => claim.abandon(),
      };
    },
  };
}
