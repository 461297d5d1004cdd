import { AMQP_URL_OPTION_NAMES, resolveAmqpOptions } from '../amqp/transport-options.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';
import type { Logger } from '../logging/logger.js';
import type { AmqpUrlOptions } from '../messaging/amqp-url-options.js';
import {
  MemoryBroker,
  type MemoryBrokerOptions,
  resolveMemoryBrokerOptions,
} from '../messaging/memory/memory-broker.js';
import { MemoryTransport } from '../messaging/memory/memory-transport.js';
import type { Transport } from '../messaging/transport.js';
import type { Clock } from '../time/clock.js';
import { redactUrl } from '../url/redact-url.js';

/**
 * Picks a transport from a URL scheme. The options of the other transport (`amqp` on `memory://`,
 * `memory` on `amqp://`) are checked all the same, so that a service switching its URL by
 * environment learns of a bad value at once, not on the day it is deployed. It sits above the bus
 * and the adapters, so the bus names no adapter; adapters are imported dynamically so that their drivers load only when used: a
 * memory-only service never loads amqplib.
 */
export async function transportFromUrl(
  url: string,
  options: {
    readonly amqp?: AmqpUrlOptions;
    readonly memory?: MemoryBrokerOptions;
    /** The bus's clock: the memory broker's unless `memory.clock` names one. */
    readonly clock?: Clock;
  },
  logger: Logger,
): Promise<Transport> {
  if (options.memory !== undefined) resolveMemoryBrokerOptions(options.memory);
  // `url` and `logger` are the bus's own: inside `amqp` they would be ignored.
  checkOptions('createBus amqp', options.amqp, AMQP_URL_OPTION_NAMES);
  const scheme = url.slice(0, Math.max(0, url.indexOf(':'))).toLowerCase();
  switch (scheme) {
    case 'memory': {
      // memory://name selects a process-wide broker by name, so services in one process can share it.
      const name = url.slice('memory://'.length).replace(/\/+$/, '') || 'default';
      if (options.amqp !== undefined) resolveAmqpOptions({ ...options.amqp, url });
      const clock = options.memory?.clock ?? options.clock;
      const memory = clock === undefined ? options.memory : { ...options.memory, clock };
      return new MemoryTransport({ broker: MemoryBroker.named(name, memory) });
    }
    case 'amqp':
    case 'amqps': {
      const { AmqpTransport } = await import('../amqp/amqp-transport.js');
      return new AmqpTransport({ ...options.amqp, url, logger });
    }
    default:
      throw new InvalidOptionsError(
        `unsupported bus URL ${redactUrl(url)}: expected memory://[name] or amqp://user:password@host:5672/vhost`,
      );
  }
}
