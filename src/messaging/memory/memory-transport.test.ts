import { testTransport } from '../../testing/transport-contract.js';
import { MemoryBroker } from './memory-broker.js';
import { MemoryTransport } from './memory-transport.js';

const broker = new MemoryBroker();

testTransport(
  'memory',
  {
    createTransport: () => new MemoryTransport({ broker }),
    publishRaw: (wire) => broker.publishRaw(wire),
  },
  { orderedPerPublisher: true },
);
