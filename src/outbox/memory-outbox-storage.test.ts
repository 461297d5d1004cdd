import { MemoryEventStoreBackend } from '../eventstore/memory/memory-backend.js';
import { EventStore } from '../eventstore/store.js';
import { testOutboxStorage } from '../testing/outbox-storage-contract.js';
import { MemoryOutboxStorage } from './memory-outbox-storage.js';

testOutboxStorage('memory', {
  async create() {
    const backend = new MemoryEventStoreBackend();
    const store = new EventStore(backend);
    return { storage: MemoryOutboxStorage.of(backend), store, close: () => store.close() };
  },
});
