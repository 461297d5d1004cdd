import { describeValue } from '../errors/describe-value.js';
import type { Contracts, DataIn, TypeOf } from '../messaging/contracts.js';
import type { OutboxPublishOptions } from '../outbox/unit-of-work.js';
import { MAX_TIMER_MS } from '../time/max-timer.js';
import { SagaDefinitionError } from './errors.js';
import { type StoredSagaState, type UndoStep, undoMessageId } from './saga-state.js';

/** When a timeout fires: after `delayMs` from now, or `at` a date. */
export type SagaTimeoutWhen = { readonly delayMs: number } | { readonly at: Date };

/** Options of `saga.publish` / `saga.send`: as `work.publish`; `key` defaults to the saga id. */
export type SagaPublishOptions = OutboxPublishOptions;

/** An instance's status and data. */
export interface SagaState<S extends string, D> {
  readonly status: S;
  readonly data: D;
}

/** @internal What a handler asked for, carried out in order in the unit of work after it returns. */
export type SagaEffect =
  | {
      readonly kind: 'publish';
      readonly type: string;
      readonly data: unknown;
      readonly options: SagaPublishOptions;
    }
  | {
      readonly kind: 'schedule';
      readonly name: string;
      readonly type: string | undefined;
      readonly data: unknown;
      readonly when: SagaTimeoutWhen;
    }
  | { readonly kind: 'cancel'; readonly name: string };

/**
 * What a saga handler gets to read and change one instance. Every call is recorded and carried out
 * when the handler returns, in the unit of work of the message: the new state, the messages and the
 * timeouts commit together, or nothing does (and the message is retried). Calls chain.
 *
 * @example
 * 'stock.reserved': (saga, msg) => {
 *   saga.done('stock', { type: 'stock.release', data: { orderId: saga.id } });
 *   saga.send('payment.charge', { orderId: saga.id, amount: saga.state.data.total });
 *   saga.schedule('payment', { delayMs: 30_000 }).to('charging', { ...saga.state.data, reservation: msg.data.id });
 * }
 */
export class SagaContext<C extends Contracts, S extends string, D> {
  /** The saga's name. */
  readonly saga: string;
  /** The instance id (from the definition's `id`). */
  readonly id: string;
  readonly #statuses: ReadonlySet<string>;
  #status: S;
  #data: D;
  #undo: UndoStep[];
  #recorded: number;
  readonly #recordedHere: UndoStep[] = [];
  readonly #pending: Set<string>;
  #completed = false;
  /** Set once the handler returned: its calls were carried out, and no later one can be. */
  #sealed = false;
  /** @internal */
  readonly effects: SagaEffect[] = [];

  /** @internal Built by the saga runtime for each message. */
  constructor(saga: string, id: string, statuses: ReadonlySet<string>, state: StoredSagaState) {
    this.saga = saga;
    this.id = id;
    this.#statuses = statuses;
    this.#status = state.status as S;
    this.#data = state.data as D;
    this.#undo = [...state.undo];
    this.#recorded = state.recorded;
    this.#pending = new Set(Object.keys(state.timeouts));
  }

  /** The instance's status and data, as changed so far by this handler. */
  get state(): SagaState<S, D> {
    return { status: this.#status, data: this.#data };
  }

  /** Whether `complete()` was called. */
  get completed(): boolean {
    return this.#completed;
  }

  /** The names of the timeouts pending once this handler's changes commit. */
  get timeouts(): readonly string[] {
    return [...this.#pending];
  }

  /** @internal The undo steps recorded, oldest first. */
  get undo(): readonly UndoStep[] {
    return this.#undo;
  }

  /** @internal How many steps the instance recorded in its life, this handler's included. */
  get recorded(): number {
    return this.#recorded;
  }

  /** @internal Every step this handler recorded, in order (replaced or compensated since included): their undo messages are checked. */
  get recordedHere(): readonly UndoStep[] {
    return this.#recordedHere;
  }

  /**
   * Moves the instance to `status` (one of the definition's `states`), with new `data` if given.
   *
   * @example saga.to('charging', { ...saga.state.data, reservationId: msg.data.reservationId });
   */
  to(status: S, ...data: [] | [D]): this {
    this.#open('to');
    if (!this.#statuses.has(status)) {
      throw new SagaDefinitionError(this.saga, `status "${String(status)}" is not declared in states`);
    }
    this.#status = status;
    if (data.length > 0) this.#data = data[0] as D;
    return this;
  }

  /** Replaces the instance's data, keeping its status. @example saga.set({ ...saga.state.data, paid: true }); */
  set(data: D): this {
    this.#open('set');
    this.#data = data;
    return this;
  }

  /**
   * Ends the instance (with new `data` if given): later messages for it follow `onCompleted`, its
   * pending timeouts are cancelled. Its status stays the one it has: move it first to a final status.
   *
   * @example saga.to('confirmed').complete();
   */
  complete(...data: [] | [D]): this {
    this.#open('complete');
    if (data.length > 0) this.#data = data[0] as D;
    this.#completed = true;
    return this;
  }

  /**
   * Publishes a message through the outbox when the unit of work commits, with `key` = the saga id
   * by default, so that one instance's messages go out in order.
   *
   * @example saga.publish('order.confirmed', { orderId: saga.id });
   */
  publish<K extends TypeOf<C>>(type: K, data: DataIn<C, K>, options: SagaPublishOptions = {}): this {
    this.#open('publish');
    // Spread over the saga's key, null or a number would be taken for no options at all.
    if (options === null || typeof options !== 'object' || Array.isArray(options)) {
      throw new SagaDefinitionError(
        this.saga,
        `instance "${this.id}": the options of message "${String(type)}" must be an object, not ${describeValue(options)}`,
      );
    }
    this.effects.push({ kind: 'publish', type, data, options });
    return this;
  }

  /** The same as {@link publish}, for commands. @example saga.send('payment.charge', { orderId: saga.id, amount: 40 }); */
  send<K extends TypeOf<C>>(type: K, data: DataIn<C, K>, options: SagaPublishOptions = {}): this {
    return this.publish(type, data, options);
  }

  /**
   * Schedules the named timeout: a durable outbox row (in the same database, listed by
   * `outbox.scheduled()`) that delivers to this instance, once, after `delayMs` or `at`. By default
   * the message is the saga's own `saga.<name>.timeout` with `{ sagaId, name }`, handled in `states`
   * under that type; or give a contract `type` and `data` (the saga must correlate it through `id`).
   * Scheduling a name that is pending replaces it. A timeout cancelled, replaced, or firing after
   * completion is ignored; one firing in a status with no handler for it is dropped too.
   *
   * @example
   * saga.schedule('payment', { delayMs: 30_000 });
   * saga.schedule('reminder', 'order.reminder', { orderId: saga.id }, { at: new Date('2026-02-01') });
   */
  schedule(name: string, when: SagaTimeoutWhen): this;
  schedule<K extends TypeOf<C>>(name: string, type: K, data: DataIn<C, K>, when: SagaTimeoutWhen): this;
  schedule(name: string, ...rest: [SagaTimeoutWhen] | [string, unknown, SagaTimeoutWhen]): this {
    this.#open('schedule');
    if (typeof name !== 'string' || name.length === 0 || name.length > 200) {
      throw new SagaDefinitionError(
        this.saga,
        'a timeout name must be a non-empty string of at most 200 characters',
      );
    }
    const [type, data, when] = rest.length === 1 ? [undefined, undefined, rest[0]] : rest;
    // Refused here, as a definition error: the same handler run again would schedule it again.
    const problem = whenProblem(when);
    if (problem !== undefined) {
      throw new SagaDefinitionError(this.saga, `instance "${this.id}": timeout "${name}" ${problem}`);
    }
    this.effects.push({ kind: 'schedule', name, type, data, when });
    this.#pending.add(name);
    return this;
  }

  /** Cancels the named timeout if it is pending (its outbox row is deleted); a no-op otherwise. @example saga.cancelTimeout('payment'); */
  cancelTimeout(name: string): this {
    this.#open('cancelTimeout');
    this.effects.push({ kind: 'cancel', name });
    this.#pending.delete(name);
    return this;
  }

  /**
   * Records that `step` was done, and the message that undoes it, for {@link compensate}. A step
   * name is unique in an instance: recording it again replaces its undo message. The undo message is
   * checked when the handler returns, as `send` checks a message (type, contract, its JSON form,
   * limits), and refused with `SagaDefinitionError`, dead-lettered at once: a message that could not
   * be sent must not wait for the compensation to fail.
   *
   * @example saga.done('stock', { type: 'stock.release', data: { orderId: saga.id } });
   */
  done<K extends TypeOf<C>>(step: string, undo: { readonly type: K; readonly data: DataIn<C, K> }): this {
    this.#open('done');
    if (typeof step !== 'string' || step.length === 0) {
      throw new SagaDefinitionError(this.saga, 'a compensation step needs a non-empty name');
    }
    if (undo === null || typeof undo !== 'object' || typeof undo.type !== 'string') {
      throw new SagaDefinitionError(this.saga, `the undo of step "${step}" needs a message type and data`);
    }
    this.#recorded++;
    const recorded: UndoStep = { step, type: undo.type, data: undo.data, recording: this.#recorded };
    this.#recordedHere.push(recorded);
    this.#undo = [...this.#undo.filter((u) => u.step !== step), recorded];
    return this;
  }

  /**
   * Publishes the undo messages of the steps done, most recent first, each with a message id derived
   * from (saga, instance id, step, and which recording of a step it is), so that a compensation run
   * again (a retried or redelivered message) sends the same ids and consumers' inboxes drop the
   * duplicates, while a step recorded again after a compensation gets an id of its own; then forgets
   * the steps. Undo handlers must be idempotent.
   *
   * @example 'payment.declined': (saga) => saga.compensate().to('cancelled').complete()
   */
  compensate(): this {
    this.#open('compensate');
    for (const undo of [...this.#undo].reverse()) {
      this.effects.push({
        kind: 'publish',
        type: undo.type,
        data: undo.data,
        options: { id: undoMessageId(this.saga, this.id, undo.step, undo.recording) },
      });
    }
    this.#undo = [];
    return this;
  }

  /**
   * @internal Called by the runtime once the handler returned (its promise settled): what it asked
   * for is carried out now, so a later call (from an async helper it did not await, or a timer) is
   * refused rather than recorded and never carried out.
   */
  seal(): void {
    this.#sealed = true;
  }

  #open(call: string): void {
    if (this.#sealed) {
      throw new SagaDefinitionError(
        this.saga,
        `saga.${call}() on instance "${this.id}" was called after its handler returned (from an async call it did not await, or a timer): it cannot be carried out; make the call before the handler returns, or await what makes it`,
      );
    }
    if (this.#completed) {
      throw new SagaDefinitionError(
        this.saga,
        `instance "${this.id}" is completed: nothing more can change it`,
      );
    }
  }
}

/** Why `when` cannot schedule a timeout, or undefined when it can. */
function whenProblem(when: unknown): string | undefined {
  const wanted = `needs exactly one of delayMs (an integer from 0 to ${MAX_TIMER_MS}) and at (a valid Date)`;
  if (when === null || typeof when !== 'object') return `${wanted}, not ${describeValue(when)}`;
  // A misspelt key (`delayMS`) or a publish option would be dropped without a word.
  const other = Object.keys(when).find((key) => key !== 'delayMs' && key !== 'at');
  if (other !== undefined) return `${wanted}, and nothing else, not ${JSON.stringify(other)}`;
  const { delayMs, at } = when as { delayMs?: unknown; at?: unknown };
  if ((delayMs === undefined) === (at === undefined)) return `${wanted}, not ${describeValue(when)}`;
  if (delayMs !== undefined) {
    if (typeof delayMs !== 'number' || !Number.isInteger(delayMs) || delayMs < 0 || delayMs > MAX_TIMER_MS) {
      return `${wanted}, not delayMs ${describeValue(delayMs)}`;
    }
    return undefined;
  }
  if (!(at instanceof Date) || Number.isNaN(at.getTime())) return `${wanted}, not at ${describeValue(at)}`;
  return undefined;
}
