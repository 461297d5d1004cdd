import { describe, expect, it } from 'vitest';
import { InstancesArgumentError, MAX_INSTANCES, parseInstances } from './instances.js';

const services = ['users', 'orders', 'payments', 'inventory'] as const;

function refusal(argv: string[]): InstancesArgumentError {
  try {
    parseInstances(argv, services);
  } catch (error) {
    if (error instanceof InstancesArgumentError) return error;
    throw error;
  }
  throw new Error(`accepted ${argv.join(' ')}`);
}

describe('parseInstances', () => {
  it('gives every service 1 unless told otherwise', () => {
    expect(parseInstances([], services)).toEqual({
      instances: { users: 1, orders: 1, payments: 1, inventory: 1 },
      rest: [],
    });
  });

  it('reads repeated, comma-separated and --instances= forms, and returns the other arguments', () => {
    const parsed = parseInstances(
      [
        '--verbose',
        '--instances',
        'payments=2',
        '--instances',
        'orders=3, users=16',
        '--instances=inventory=1',
        'x',
      ],
      services,
    );
    expect(parsed.instances).toEqual({ users: 16, orders: 3, payments: 2, inventory: 1 });
    expect(parsed.rest).toEqual(['--verbose', 'x']);
  });

  it('refuses an unknown service, naming the known ones', () => {
    const error = refusal(['--instances', 'payment=2']);
    expect(error.message).toBe(
      "--instances: unknown service 'payment' in 'payment=2'; known services: users, orders, payments, inventory",
    );
    expect(error.code).toBe('BAD_INSTANCES_ARGUMENT');
    expect(error.argument).toBe('payment=2');
  });

  it.each([['0'], ['17'], ['-1'], ['2.5'], ['two'], [''], ['1e1'], ['0x2']])(
    'refuses the count %j',
    (count) => {
      const error = refusal(['--instances', `payments=${count}`]);
      expect(error.message).toBe(
        `--instances: the count of 'payments' must be an integer from 1 to ${MAX_INSTANCES}; got '${count}'`,
      );
    },
  );

  it('refuses malformed input: no value, no =, an empty entry, a name given twice', () => {
    expect(refusal(['--instances']).message).toBe('--instances needs a value, like --instances payments=2');
    expect(refusal(['--instances', '--verbose']).message).toBe(
      '--instances needs a value, like --instances payments=2',
    );
    expect(refusal(['--instances', 'payments']).message).toBe(
      "--instances expects name=count, like payments=2; got 'payments'",
    );
    expect(refusal(['--instances', 'payments=2,']).message).toBe(
      "--instances has an empty entry in 'payments=2,'",
    );
    expect(refusal(['--instances=']).message).toBe("--instances has an empty entry in ''");
    expect(refusal(['--instances', 'payments=2', '--instances', 'payments=3']).message).toBe(
      "--instances: 'payments' is given more than once",
    );
  });

  it('is an Error with a name, so an entry script can print it and exit', () => {
    const error = refusal(['--instances', 'x=1']);
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe('InstancesArgumentError');
  });
});
