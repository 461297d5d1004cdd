import { InvalidOptionsError } from '../errors/ferry-error.js';
import { redactUrl } from '../url/redact-url.js';

const EXPECTED = 'amqp://user:password@host:5672/vhost';

/**
 * Checks a RabbitMQ URL before anything connects: `INVALID_OPTIONS` for one that does not parse (a
 * port over 65535 or not a number, a space in the host…), port 0 (amqplib would quietly take 5672),
 * or a malformed percent-escape in the user name, password or vhost (amqplib would send it as it is,
 * and the broker refuse a login or vhost nobody wrote). The message quotes the URL with its password
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
}
