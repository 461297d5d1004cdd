import { MemoryEventStoreBackend } from '../eventstore/memory/memory-backend.js';
import { EventStore } from '../eventstore/store.js';
import { testOutbox } from '../testing/outbox-contract.js';

testOutbox('memory', { createStore: async () => new EventStore(new MemoryEventStoreBackend()) });
