import { silentLogger } from '../../logging/logger.js';
import { testEventStore } from '../../testing/event-store-contract.js';
import { EventStore } from '../store.js';
import { MemoryEventStoreBackend } from './memory-backend.js';

testEventStore('memory', {
  createStore: async () => new EventStore(new MemoryEventStoreBackend(), { logger: silentLogger }),
});
