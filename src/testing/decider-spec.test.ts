import { AssertionError } from 'node:assert';
import { describe, expect, it } from 'vitest';
import type { Decider } from '../eventstore/decider.js';
import { deciderSpec } from './decider-spec.js';

// A small order aggregate to specify.

interface Item {
  readonly sku: string;
  readonly quantity: number;
}

type OrderCommand =
  | { readonly type: 'PlaceOrder'; readonly customerId: string }
  | { readonly type: 'AddItem'; readonly item: Item }
  | { readonly type: 'Confirm' };

type OrderEvent =
  | { readonly type: 'OrderPlaced'; readonly data: { readonly customerId: string } }
  | { readonly type: 'ItemAdded'; readonly data: Item }
  | { readonly type: 'OrderConfirmed'; readonly data: { readonly itemCount: number } };

interface OrderState {
  readonly status: 'none' | 'open' | 'confirmed';
  readonly items: readonly Item[];
}

class OrderError extends Error {
  constructor(
    readonly code: 'ORDER_NOT_PLACED' | 'ORDER_CONFIRMED' | 'ORDER_EMPTY',
    message: string,
  ) {
    super(message);
    this.name = 'OrderError';
  }
}
const isOrderError = (error: unknown): error is OrderError => error instanceof OrderError;

const orderDecider: Decider<OrderCommand, OrderEvent, OrderState> = {
  initialState: () => ({ status: 'none', items: [] }),
  evolve(state, event) {
    switch (event.type) {
      case 'OrderPlaced':
        return { ...state, status: 'open' };
      case 'ItemAdded':
        return { ...state, items: [...state.items, event.data] };
      case 'OrderConfirmed':
        return { ...state, status: 'confirmed' };
    }
  },
  decide(command, state) {
    switch (command.type) {
      case 'PlaceOrder':
        return state.status === 'none'
          ? { type: 'OrderPlaced', data: { customerId: command.customerId } }
          : [];
      case 'AddItem':
        if (state.status === 'none') throw new OrderError('ORDER_NOT_PLACED', 'there is no such order');
        if (state.status === 'confirmed')
          throw new OrderError('ORDER_CONFIRMED', 'a confirmed order cannot change');
        return [{ type: 'ItemAdded', data: command.item }];
      case 'Confirm':
        if (state.items.length === 0)
          throw new OrderError('ORDER_EMPTY', 'an order needs items to be confirmed');
        return { type: 'OrderConfirmed', data: { itemCount: state.items.length } };
    }
  },
};

const placed: OrderEvent = { type: 'OrderPlaced', data: { customerId: 'c-1' } };
const apple: OrderEvent = { type: 'ItemAdded', data: { sku: 'apple', quantity: 2 } };
const confirmed: OrderEvent = { type: 'OrderConfirmed', data: { itemCount: 1 } };
const addPear: OrderCommand = { type: 'AddItem', item: { sku: 'pear', quantity: 1 } };

/** The AssertionError `fn` throws; fails the test when it throws nothing or something else. */
function assertionFrom(fn: () => void): AssertionError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(AssertionError);
    return error as AssertionError;
  }
  throw new Error('expected an AssertionError, but nothing was thrown');
}

describe('deciderSpec', () => {
  describe('then', () => {
    it('passes when decide returns the expected events', () => {
      deciderSpec(orderDecider)
        .given([placed])
        .when(addPear)
        .then([{ type: 'ItemAdded', data: { sku: 'pear', quantity: 1 } }]);
    });

    it('normalises a single decided event to an array', () => {
      deciderSpec(orderDecider).given([]).when({ type: 'PlaceOrder', customerId: 'c-1' }).then([placed]);
    });

    it('passes with [] when decide decides nothing', () => {
      deciderSpec(orderDecider).given([placed]).when({ type: 'PlaceOrder', customerId: 'c-2' }).then([]);
    });

    it('folds the given events before deciding', () => {
      deciderSpec(orderDecider).given([placed, apple]).when({ type: 'Confirm' }).then([confirmed]);
    });

    it('fails with a diff when the events differ', () => {
      const failure = assertionFrom(() =>
        deciderSpec(orderDecider)
          .given([placed])
          .when(addPear)
          .then([{ type: 'ItemAdded', data: { sku: 'pear', quantity: 5 } }]),
      );
      expect(failure.message).toContain('decide returned other events than expected');
      expect(failure.message).toMatch(/quantity: 1/);
      expect(failure.message).toMatch(/quantity: 5/);
      expect(failure.message.split('+ actual - expected')).toHaveLength(2); // the diff, once
      expect(failure.actual).toEqual([{ type: 'ItemAdded', data: { sku: 'pear', quantity: 1 } }]);
    });

    it('fails when decide returns more or fewer events than expected', () => {
      assertionFrom(() => deciderSpec(orderDecider).given([placed]).when(addPear).then([]));
      assertionFrom(() =>
        deciderSpec(orderDecider)
          .given([])
          .when({ type: 'PlaceOrder', customerId: 'c-1' })
          .then([placed, placed]),
      );
    });

    it('rejects with a hint when the spec is awaited instead of ended with then', async () => {
      const spec = deciderSpec(orderDecider).given([placed]).when(addPear);
      await expect(async () => {
        // TypeScript refuses `await spec` (TS1320); plain JavaScript would not.
        await (spec as unknown as PromiseLike<void>);
      }).rejects.toThrow(/not a promise/);
    });

    it('fails, naming the error, when decide throws', () => {
      const failure = assertionFrom(() => deciderSpec(orderDecider).given([]).when(addPear).then([apple]));
      expect(failure.message).toContain('decide threw OrderError: there is no such order');
      expect(failure.message).toContain("type: 'ItemAdded'");
      expect(failure.cause).toBeInstanceOf(OrderError);
    });
  });

  describe('thenThrows', () => {
    const whenConfirmed = () => deciderSpec(orderDecider).given([placed, apple, confirmed]).when(addPear);

    it('passes with the error class', () => {
      whenConfirmed().thenThrows(OrderError);
      whenConfirmed().thenThrows(Error);
    });

    it('passes with a predicate', () => {
      whenConfirmed().thenThrows((error) => isOrderError(error) && error.code === 'ORDER_CONFIRMED');
      whenConfirmed().thenThrows(isOrderError);
    });

    it('passes with a pattern matching the message', () => {
      whenConfirmed().thenThrows(/cannot change/);
    });

    it('matches a global pattern every time, whatever its lastIndex', () => {
      const pattern = /confirmed/g;
      whenConfirmed().thenThrows(pattern);
      whenConfirmed().thenThrows(pattern);
    });

    it('fails, showing the decided events, when decide does not throw', () => {
      const failure = assertionFrom(() =>
        deciderSpec(orderDecider).given([placed]).when(addPear).thenThrows(OrderError),
      );
      expect(failure.message).toContain(
        'expected decide to throw an error matching the class OrderError, but it returned',
      );
      expect(failure.message).toContain("sku: 'pear'");
    });

    it('fails when the error is of another class', () => {
      class PaymentError extends Error {}
      const failure = assertionFrom(() => whenConfirmed().thenThrows(PaymentError));
      expect(failure.message).toBe(
        'decide threw OrderError: a confirmed order cannot change, which does not match the class PaymentError',
      );
      expect(failure.cause).toBeInstanceOf(OrderError);
    });

    it('fails when the predicate says no', () => {
      const failure = assertionFrom(() =>
        whenConfirmed().thenThrows(function isEmptyOrder(error) {
          return isOrderError(error) && error.code === 'ORDER_EMPTY';
        }),
      );
      expect(failure.message).toContain('which does not match the predicate isEmptyOrder');
    });

    it('fails when the message does not match the pattern', () => {
      const failure = assertionFrom(() => whenConfirmed().thenThrows(/out of stock/));
      expect(failure.message).toContain('which does not match the message pattern /out of stock/');
    });

    it('passes with an error code string', () => {
      whenConfirmed().thenThrows('ORDER_CONFIRMED');
      expect(() => whenConfirmed().thenThrows('ORDER_EMPTY')).toThrow(AssertionError);
    });

    it('refuses a matcher of no known kind before deciding, whether or not decide throws', () => {
      // As handlerSpec and sagaSpec do: a spec whose matcher can never match is the test's mistake,
      // said as such, not an assertion about decide.
      for (const spec of [whenConfirmed, () => deciderSpec(orderDecider).given([placed]).when(addPear)]) {
        let refusal: unknown;
        try {
          spec().thenThrows(42 as never);
        } catch (error) {
          refusal = error;
        }
        expect(refusal).toMatchObject({ code: 'INVALID_OPTIONS' });
        expect(refusal).not.toBeInstanceOf(AssertionError);
      }
    });
  });

  describe('thenState', () => {
    it('passes when the state after the decided events is the expected one', () => {
      deciderSpec(orderDecider)
        .given([placed, apple])
        .when(addPear)
        .thenState({
          status: 'open',
          items: [
            { sku: 'apple', quantity: 2 },
            { sku: 'pear', quantity: 1 },
          ],
        });
    });

    it('fails with a diff when the state differs', () => {
      const failure = assertionFrom(() =>
        deciderSpec(orderDecider)
          .given([placed, apple])
          .when({ type: 'Confirm' })
          .thenState({ status: 'open', items: [] }),
      );
      expect(failure.message).toContain('the state after decide is not the expected one');
      expect(failure.message).toContain("'confirmed'");
    });

    it('fails when decide throws', () => {
      const failure = assertionFrom(() =>
        deciderSpec(orderDecider)
          .given([])
          .when({ type: 'Confirm' })
          .thenState({ status: 'none', items: [] }),
      );
      expect(failure.message).toContain('decide threw OrderError: an order needs items to be confirmed');
    });
  });

  it('starts every spec from a fresh initial state', () => {
    const spec = deciderSpec(orderDecider).given([placed, apple]);
    spec.when(addPear).then([{ type: 'ItemAdded', data: { sku: 'pear', quantity: 1 } }]);
    spec.when({ type: 'Confirm' }).then([confirmed]);
    deciderSpec(orderDecider)
      .given([placed])
      .when({ type: 'Confirm' })
      .thenThrows(/needs items/);
  });
});
