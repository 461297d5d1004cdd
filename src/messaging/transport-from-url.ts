import type { AmqpTransportOptions } from '../amqp/amqp-transport.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import type { Logger } from './logger.js';
import { MemoryBroker, type MemoryBrokerOptions } from './memory/memory-broker.js';
import { MemoryTransport } from './memory/memory-transport.js';
import type { Transport } from './transport.js';

/**
 * Masks the password of a URL so it can appear in logs and errors. Works on text that does not parse
 * as a URL too (`user:secret@host` without a scheme), since that is exactly what a typo produces.
 */
export function redactUrl(url: string): string {
  const scheme = url.indexOf('://');
  const authority = scheme >= 0 ? scheme + 3 : 0;
  const at = url.indexOf('@', authority);
  if (at < 0) return url;
  const colon = url.indexOf(':', authority);
  if (colon < 0 || colon > at) return url;
  return `${url.slice(0, colon)}:***${url.slice(url.lastIndexOf('@'))}`;
}

/**
 * Picks a transport from a URL scheme. Adapters are imported dynamically so that their drivers load
 * only when used: a memory-only service never loads amqplib.
 */
export async function transportFromUrl(
  url: string,
  options: {
    readonly amqp?: Omit<AmqpTransportOptions, 'url' | 'logger'>;
    readonly memory?: MemoryBrokerOptions;
  },
  logger: Logger,
): Promise<Transport> {
  const scheme = url.slice(0, Math.max(0, url.indexOf(':'))).toLowerCase();
  switch (scheme) {
    case 'memory': {
      // memory://name selects a process-wide broker by name, so services in one process can share it.
      const name = url.slice('memory://'.length).replace(/\/+$/, '') || 'default';
      return new MemoryTransport({ broker: MemoryBroker.named(name, options.memory) });
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
