import { InvalidOptionsError } from '../errors/ferry-error.js';
import { redactUrl } from '../url/redact-url.js';

const EXPECTED = 'amqp://user:password@host:5672/vhost';

/**
 * Checks a RabbitMQ URL before anything connects: `INVALID_OPTIONS` for one that does not parse (a
 * port over 65535 or not a number, a space in the host…), port 0 (amqplib would quietly take 5672),
 * a malformed percent-escape in the user name, password or vhost (amqplib would send it as it is,
 * and the broker refuse a login or vhost nobody wrote), or a query parameter amqplib would misread
 * (see {@link assertAmqpQuery}). The message quotes the URL with its password
 * masked (`***`, as everywhere), and nothing of the parser's error is kept: Node's `TypeError`
 * carries the whole URL, password included, in its `input` field.
 */
export function assertAmqpUrl(url: unknown): asserts url is string {
  if (typeof url !== 'string' || !/^amqps?:\/\//i.test(url)) {
    throw new InvalidOptionsError(`AmqpTransport needs a url of the form ${EXPECTED}`);
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidOptionsError(
      `the bus URL ${redactUrl(url)} is not a valid URL (check the host, the port, and that the user name and password percent-encode characters such as / ? # @ and spaces); expected ${EXPECTED}`,
    );
  }
  if (parsed.hostname === '' && parsed.username + parsed.password !== '') {
    throw new InvalidOptionsError(`the bus URL ${redactUrl(url)} names no host; expected ${EXPECTED}`);
  }
  if (parsed.port !== '' && Number(parsed.port) === 0) {
    throw new InvalidOptionsError(`the port of the bus URL ${redactUrl(url)} must be from 1 to 65535`);
  }
  const parts: [string, string][] = [
    ['user name', parsed.username],
    ['password', parsed.password],
    ['virtual host', parsed.pathname.slice(1)],
  ];
  for (const [part, text] of parts) {
    try {
      decodeURIComponent(text);
    } catch {
      throw new InvalidOptionsError(
        `the ${part} of the bus URL ${redactUrl(url)} has a malformed percent-escape: % must start an escape of UTF-8 (two hex digits each, %25 for % itself)`,
      );
    }
  }
  assertAmqpQuery(parsed.search, url);
}

/** The query parameters amqplib reads from a URL, and what each must be for the connect to work. */
const QUERY_PARAMETERS: Readonly<
  Record<string, { readonly rule: string; readonly ok: (v: string) => boolean }>
> = {
  heartbeat: { rule: 'seconds, a whole number from 0 (none) to 65535', ok: (v) => digitsUpTo(v, 65_535) },
  channelMax: {
    rule: "a whole number from 0 (the broker's limit) to 65535",
    ok: (v) => digitsUpTo(v, 65_535),
  },
  frameMax: {
    rule: "bytes, 0 (the broker's limit) or a whole number from 4096 to 4294967295",
    ok: (v) => digitsUpTo(v, 4_294_967_295) && (Number(v) === 0 || Number(v) >= 4096),
  },
  maxFrameSize: {
    rule: 'bytes, 0 (no limit) or a whole number from 4096 to 4294967295',
    ok: (v) => digitsUpTo(v, 4_294_967_295) && (Number(v) === 0 || Number(v) >= 4096),
  },
  locale: { rule: 'a locale such as en_US', ok: () => true },
};

function digitsUpTo(value: string, max: number): boolean {
  return /^\d{1,10}$/.test(value) && Number(value) <= max;
}

/**
 * The query of an AMQP URL: only the parameters amqplib reads, each once, each with a value it reads
 * as meant. Otherwise amqplib fails every connect with a type error (`heartbeat=abc`), the broker
 * drops the socket (`frameMax=100`) — both seen only as `BROKER_UNAVAILABLE` after the whole
 * connect timeout — or the value is quietly misread (`heartbeat=30m` as 30 s; a repeated parameter
 * as its first value) or ignored (RabbitMQ's own `connection_timeout`, a misspelt `hearbeat`).
 */
function assertAmqpQuery(search: string, url: string): void {
  const seen = new Set<string>();
  for (const [name, value] of new URLSearchParams(search)) {
    const parameter = Object.hasOwn(QUERY_PARAMETERS, name) ? QUERY_PARAMETERS[name] : undefined;
    if (parameter === undefined) {
      throw new InvalidOptionsError(
        `the bus URL ${redactUrl(url)} has a query parameter amqplib does not read (${quoted(name)}): it takes only ${Object.keys(QUERY_PARAMETERS).join(', ')}; set the connect timeout with the amqp.connectTimeoutMs option`,
      );
    }
    if (seen.has(name)) {
      throw new InvalidOptionsError(`the bus URL ${redactUrl(url)} gives ${name} more than once`);
    }
    seen.add(name);
    if (!parameter.ok(value)) {
      throw new InvalidOptionsError(
        `the ${name} of the bus URL ${redactUrl(url)} must be ${parameter.rule} (got ${quoted(value)})`,
      );
    }
  }
}

/** A parameter's name or value as the message shows it: JSON-quoted, cut at 64 characters. */
function quoted(text: string): string {
  return JSON.stringify(text.length > 64 ? `${text.slice(0, 64)}…` : text);
}
