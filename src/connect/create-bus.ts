import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';
import { stderrLogger } from '../logging/logger.js';
import { loggerOption } from '../logging/logger-option.js';
import { Bus, type BusOptions, busSettingsOf } from '../messaging/bus.js';
import type { Contracts, NoContracts } from '../messaging/contracts.js';
import { transportFromUrl } from './transport-from-url.js';

/** What {@link createBus} reads: anything else is a misspelt or misplaced option, refused. */
const BUS_OPTION_NAMES = [
  'url',
  'transport',
  'service',
  'contracts',
  'inbox',
  'middleware',
  'subscriptionDefaults',
  'closeTimeoutMs',
  'logger',
  'amqp',
  'memory',
  'clock',
] as const satisfies readonly (keyof BusOptions)[];

/**
 * Creates a connected bus. The transport comes from `options.transport`, or from the scheme of
 * `options.url`; an adapter's driver (amqplib) is loaded only when its scheme is used.
 */
export async function createBus<C extends Contracts = NoContracts>(options: BusOptions<C>): Promise<Bus<C>> {
  if (options === undefined) throw new InvalidOptionsError('createBus needs options: { url, service }');
  checkOptions('createBus', options, BUS_OPTION_NAMES);
  if (options.url !== undefined && typeof options.url !== 'string') {
    throw new InvalidOptionsError(`createBus url must be a string, not ${describeValue(options.url)}`);
  }
  if ((options.url === undefined) === (options.transport === undefined)) {
    throw new InvalidOptionsError('createBus needs exactly one of `url` and `transport`');
  }
  const logger = loggerOption('createBus', options.logger) ?? stderrLogger;
  // The bus's own options first: a named memory broker made for a bus refused after would keep
  // that call's limits, and refuse the corrected call's.
  busSettingsOf(options as BusOptions<Contracts>);
  const transport = options.transport ?? (await transportFromUrl(options.url!, options, logger));
  const bus = new Bus<C>(transport, options);
  await transport.connect();
  return bus;
}
