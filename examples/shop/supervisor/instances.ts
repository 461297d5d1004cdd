/** The most instances of one service `--instances` accepts. */
export const MAX_INSTANCES = 16;

/** A `--instances` argument that cannot be used; `message` says what is wrong and what was given. */
export class InstancesArgumentError extends Error {
  readonly code = 'BAD_INSTANCES_ARGUMENT';

  constructor(
    message: string,
    /** The offending text, as given on the command line. */
    readonly argument: string,
  ) {
    super(message);
    this.name = 'InstancesArgumentError';
  }
}

/** What {@link parseInstances} found. */
export interface ParsedInstances<S extends string> {
  /** The count of every known service: as given, or 1. */
  readonly instances: Readonly<Record<S, number>>;
  /** The arguments that were not `--instances` ones, in order, for the caller to use or refuse. */
  readonly rest: readonly string[];
}

const FLAG = '--instances';

function parseEntry<S extends string>(entry: string, services: readonly S[], given: Map<S, number>): void {
  const equals = entry.indexOf('=');
  if (equals < 0) {
    throw new InstancesArgumentError(
      `--instances expects name=count, like payments=2; got '${entry}'`,
      entry,
    );
  }
  const name = entry.slice(0, equals).trim();
  const count = entry.slice(equals + 1).trim();
  if (!services.includes(name as S)) {
    throw new InstancesArgumentError(
      `--instances: unknown service '${name}' in '${entry}'; known services: ${services.join(', ')}`,
      entry,
    );
  }
  if (given.has(name as S)) {
    throw new InstancesArgumentError(`--instances: '${name}' is given more than once`, entry);
  }
  const value = /^\d+$/.test(count) ? Number(count) : Number.NaN;
  if (!(value >= 1 && value <= MAX_INSTANCES)) {
    throw new InstancesArgumentError(
      `--instances: the count of '${name}' must be an integer from 1 to ${MAX_INSTANCES}; got '${count}'`,
      entry,
    );
  }
  given.set(name as S, value);
}

/**
 * Reads `--instances name=count` from command-line arguments: repeatable (`--instances payments=2
 * --instances orders=3`), comma-separated (`--instances payments=2,orders=3`), and as
 * `--instances=payments=2`. Names must be among `services`, counts integers from 1 to
 * {@link MAX_INSTANCES}, each name given at most once; anything else throws an
 * {@link InstancesArgumentError} that names the offending text.
 *
 * @example
 * parseInstances(process.argv.slice(2), ['users', 'orders', 'payments']).instances.payments; // 2
 */
export function parseInstances<const S extends string>(
  argv: readonly string[],
  services: readonly S[],
): ParsedInstances<S> {
  const given = new Map<S, number>();
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const argument = argv[i]!;
    let value: string | undefined;
    if (argument === FLAG) {
      value = argv[i + 1];
      if (value === undefined || value.startsWith('--')) {
        throw new InstancesArgumentError('--instances needs a value, like --instances payments=2', argument);
      }
      i += 1;
    } else if (argument.startsWith(`${FLAG}=`)) {
      value = argument.slice(FLAG.length + 1);
    } else {
      rest.push(argument);
      continue;
    }
    const entries = value.split(',');
    if (entries.some((entry) => entry.trim() === '')) {
      throw new InstancesArgumentError(`--instances has an empty entry in '${value}'`, value);
    }
    for (const entry of entries) parseEntry(entry, services, given);
  }
  const instances = Object.fromEntries(services.map((name) => [name, given.get(name) ?? 1])) as Record<
    S,
    number
  >;
  return { instances, rest };
}
