import { testInbox } from '../testing/inbox-contract.js';
import { MemoryInbox } from './inbox.js';

testInbox('memory', { create: async () => ({ inbox: new MemoryInbox() }) }, { durable: false });
