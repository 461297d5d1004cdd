import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';
import type { Contracts, DataOut, TypeOf } from '../messaging/contracts.js';
import type { Message } from '../messaging/envelope.js';
import { assertMessageType } from '../messaging/topic.js';
import type { SagaContext } from './saga-context.js';

/** The message type of a saga's own timeouts: `saga.<name>.timeout`, with {@link SagaTimeoutData}. */
export type SagaTimeoutType<N extends string> = `saga.${N}.timeout`;

/** The data of a saga's own timeout message: which instance, which named timeout. */
export interface SagaTimeoutData {
  readonly sagaId: string;
  readonly name: string;
}

/**
 * The message a saga handler gets for type `K` of contracts `C`. For a union of types (a saga
 * `startedBy` several), a union of messages: checking `message.type` narrows `message.data`.
 */
export type SagaMessage<C extends Contracts, K extends string> = K extends unknown
  ? Message<DataOut<C, K>, K>
  : never;

/**
 * A handler of one message type in one status: changes the instance through `saga`. What it returns
 * is ignored (awaited when it is a promise), so a one-line arrow may return the chained `saga`.
 */
export type SagaHandler<C extends Contracts, S extends string, D, M> = (
  saga: SagaContext<C, S, D>,
  message: M,
) => unknown;

/**
 * The handlers of one status, by message type: the types of the contracts, and the saga's own
 * timeout type (`saga.<name>.timeout`). A type without a handler is an invalid transition in this
 * status (see `onInvalid`). A final status (`confirmed: {}`) has none.
 */
export type SagaStateHandlers<C extends Contracts, N extends string, S extends string, D> = {
  readonly [K in TypeOf<C> | SagaTimeoutType<N>]?: SagaHandler<
    C,
    S,
    D,
    K extends SagaTimeoutType<N> ? Message<SagaTimeoutData, K> : SagaMessage<C, K>
  >;
};

/** What to do with a message the saga cannot apply: dead-letter it at once (with a typed error), or acknowledge and drop it. */
export type SagaPolicy = 'dead-letter' | 'ignore';

/** The options of {@link defineSaga}: `S` (the statuses) is inferred from the keys of `states`, `D` from `initial`. */
export interface SagaOptions<
  C extends Contracts,
  N extends string,
  Start extends TypeOf<C>,
  S extends string,
  D,
> {
  /**
   * The saga's name: the key of its instances in the store, its subscription group (`saga-<name>`)
   * and part of its timeout type. A word of letters, digits, `_` and `-`.
   */
  readonly name: N;
  /** The contracts of the messages it handles and sends (the bus's, or a subset): types them all. */
  readonly contracts: C;
  /** The message types that create an instance when none exists for their id. */
  readonly startedBy: readonly Start[];
  /** The first state of an instance, from the message that starts it. `data` must survive a JSON round trip. */
  readonly initial: (message: SagaMessage<C, Start>) => { readonly status: NoInfer<S>; readonly data: D };
  /**
   * Runs once, right after `initial`, in the same unit of work: send the first commands, schedule
   * the first timeouts. @default nothing
   */
  readonly started?: (
    saga: SagaContext<C, NoInfer<S>, NoInfer<D>>,
    message: SagaMessage<C, Start>,
  ) => unknown;
  /**
   * Correlation: for each message type the saga handles (its own timeouts aside), the id of the
   * instance the message belongs to. Every type in `startedBy` and in `states` needs one.
   */
  readonly id: { readonly [K in TypeOf<C>]?: (message: SagaMessage<C, K>) => string };
  /** The statuses and, in each, the handlers of the messages it accepts. */
  readonly states: { readonly [K in S]: SagaStateHandlers<C, N, NoInfer<S>, NoInfer<D>> };
  /** A message (not a start message) for an instance that does not exist. @default 'dead-letter' */
  readonly onUnknown?: SagaPolicy;
  /** A message for a completed instance (its own timeouts are always ignored). @default 'ignore' */
  readonly onCompleted?: SagaPolicy;
  /**
   * A message whose type has no handler in the instance's status (a start message for an existing
   * instance is a duplicate and always ignored; so is a timeout in a status that does not handle it).
   * @default 'dead-letter', with a `SagaTransitionError` naming saga, id, status and message type
   */
  readonly onInvalid?: SagaPolicy;
}

/** A saga checked by {@link defineSaga}: run it with `startSaga`, test it with `sagaSpec`. */
export interface SagaDefinition<
  C extends Contracts = Contracts,
  N extends string = string,
  Start extends TypeOf<C> = TypeOf<C>,
  S extends string = string,
  D = unknown,
> extends SagaOptions<C, N, Start, S, D> {
  /** The type of its own timeout messages. */
  readonly timeoutType: SagaTimeoutType<N>;
  /** Every message type it subscribes to: start types, handled types and its timeout type. */
  readonly handledTypes: readonly string[];
}

const NAME = /^[A-Za-z0-9_-]{1,80}$/;
const POLICIES: readonly unknown[] = ['dead-letter', 'ignore'];
const SAGA_OPTION_NAMES = [
  'name',
  'contracts',
  'startedBy',
  'initial',
  'started',
  'id',
  'states',
  'onUnknown',
  'onCompleted',
  'onInvalid',
];

/**
 * Defines a saga (a process manager): a state machine with a persisted state per instance, driven by
 * messages, that sends commands, schedules timeouts and compensates. Statuses are inferred from
 * `states`, so `saga.to(…)` only accepts declared ones; message types and data come from `contracts`.
 * Checks the definition now (names, policies, correlation of every handled type).
 *
 * @example
 * const orderSaga = defineSaga({
 *   name: 'order',
 *   contracts,
 *   startedBy: ['order.placed'],
 *   initial: (m) => ({ status: 'reserving', data: { orderId: m.data.orderId, total: m.data.total } }),
 *   started: (saga) => saga.send('stock.reserve', { orderId: saga.id }),
 *   id: {
 *     'order.placed': (m) => m.data.orderId,
 *     'stock.reserved': (m) => m.data.orderId,
 *     'payment.charged': (m) => m.data.orderId,
 *   },
 *   states: {
 *     reserving: {
 *       'stock.reserved': (saga) => {
 *         saga.done('stock', { type: 'stock.release', data: { orderId: saga.id } });
 *         saga.send('payment.charge', { orderId: saga.id, amount: saga.state.data.total });
 *         saga.schedule('payment', { delayMs: 30_000 });
 *         saga.to('charging');
 *       },
 *     },
 *     charging: {
 *       'payment.charged': (saga) => saga.cancelTimeout('payment').to('confirmed').complete(),
 *       'saga.order.timeout': (saga) => saga.compensate().to('cancelled').complete(),
 *     },
 *     confirmed: {},
 *     cancelled: {},
 *   },
 * });
 */
export function defineSaga<
  C extends Contracts,
  const N extends string,
  Start extends TypeOf<C>,
  S extends string,
  D,
>(options: SagaOptions<C, N, Start, S, D>): SagaDefinition<C, N, Start, S, D> {
  // A misspelt policy (`onComplete`) would otherwise be dropped and its default used without a word.
  // A definition spread into a new one (`{ ...orderSaga, name: 'other' }`) brings its timeoutType
  // and handledTypes: not options, but made anew below.
  const {
    timeoutType: _timeoutType,
    handledTypes: _handledTypes,
    ...own
  } = (options ?? {}) as Partial<SagaDefinition<C, N, Start, S, D>>;
  checkOptions('defineSaga', own, SAGA_OPTION_NAMES);
  const { name } = options ?? {};
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new InvalidOptionsError(
      'a saga name must be 1 to 80 letters, digits, "_" or "-" (it names its group and timeout type)',
    );
  }
  for (const key of ['onUnknown', 'onCompleted', 'onInvalid'] as const) {
    if (options[key] !== undefined && !POLICIES.includes(options[key])) {
      throw new InvalidOptionsError(`${key} must be 'dead-letter' or 'ignore'`);
    }
  }
  if (!Array.isArray(options.startedBy) || options.startedBy.length === 0) {
    throw new InvalidOptionsError(`saga "${name}" needs at least one message type in startedBy`);
  }
  if (typeof options.initial !== 'function') {
    throw new InvalidOptionsError(`saga "${name}" needs an initial(message) function`);
  }
  if (options.started !== undefined && typeof options.started !== 'function') {
    throw new InvalidOptionsError(`saga "${name}": started must be a function (saga, message) => …`);
  }
  if (options.id === null || typeof options.id !== 'object' || Array.isArray(options.id)) {
    throw new InvalidOptionsError(`saga "${name}" needs id: { [message type]: (message) => instance id }`);
  }
  if (
    options.states === null ||
    typeof options.states !== 'object' ||
    Object.keys(options.states).length === 0
  ) {
    throw new InvalidOptionsError(`saga "${name}" needs at least one status in states`);
  }
  const timeoutType: SagaTimeoutType<N> = `saga.${name}.timeout`;
  const types = new Set<string>(options.startedBy);
  for (const [status, handlers] of Object.entries<object>(options.states)) {
    if (handlers === null || typeof handlers !== 'object') {
      throw new InvalidOptionsError(`saga "${name}": status "${status}" must map message types to handlers`);
    }
    for (const [type, handler] of Object.entries(handlers)) {
      if (typeof handler !== 'function') {
        throw new InvalidOptionsError(
          `saga "${name}": the handler of "${type}" in "${status}" is not a function`,
        );
      }
      types.add(type);
    }
  }
  const ids = options.id as Readonly<Record<string, unknown>>;
  for (const type of types) {
    assertMessageType(type);
    if (type !== timeoutType && typeof (Object.hasOwn(ids, type) ? ids[type] : undefined) !== 'function') {
      throw new InvalidOptionsError(
        `saga "${name}" handles "${type}" but has no id for it: add id['${type}'] = (message) => instance id`,
      );
    }
  }
  // An id for a type the saga handles nowhere is never read: a misspelt type, or a handler left out.
  for (const type in ids) {
    if (!types.has(type)) {
      throw new InvalidOptionsError(
        `saga "${name}" has an id for "${type}" but neither starts with nor handles it: it takes ids for ${[...types].join(', ')}`,
      );
    }
  }
  types.add(timeoutType);
  return Object.freeze({ ...options, timeoutType, handledTypes: Object.freeze([...types]) });
}
