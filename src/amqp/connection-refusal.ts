import { errorGuard } from '../errors/ferry-error.js';
import { BrokerConnectionError } from '../messaging/errors.js';
import { probeVhostAccess } from './handshake-probe.js';

/** RabbitMQ refused the user name or password of the URL. Retrying cannot help. */
export class BrokerAccessRefusedError extends BrokerConnectionError {
  readonly url: string;
  constructor(url: string, options: { cause?: unknown } = {}) {
    super(
      `RabbitMQ at ${url} refused the login: check the user name and password in the URL (the user must exist and may not be limited to loopback connections)`,
      options,
      'BROKER_ACCESS_REFUSED',
    );
    this.url = url;
  }
}
export const isBrokerAccessRefusedError = errorGuard<BrokerAccessRefusedError>('BROKER_ACCESS_REFUSED');

/** The URL names a virtual host that does not exist on the broker. Retrying cannot help. */
export class BrokerVhostNotFoundError extends BrokerConnectionError {
  readonly url: string;
  readonly vhost: string;
  constructor(url: string, vhost: string, options: { cause?: unknown } = {}) {
    super(
      `RabbitMQ at ${url} has no virtual host "${vhost}": create it (rabbitmqctl add_vhost) or fix the path of the URL`,
      options,
      'BROKER_VHOST_NOT_FOUND',
    );
    this.url = url;
    this.vhost = vhost;
  }
}
export const isBrokerVhostNotFoundError = errorGuard<BrokerVhostNotFoundError>('BROKER_VHOST_NOT_FOUND');

/** The user may not use the virtual host, or may not declare or use Ferry's objects in it. */
export class BrokerPermissionDeniedError extends BrokerConnectionError {
  readonly url: string;
  readonly vhost: string;
  constructor(url: string, vhost: string, detail: string, options: { cause?: unknown } = {}) {
    // The broker names what it refused: one queue or exchange of the vhost (a pattern that leaves it
    // out), or the vhost itself.
    const object = /access to (queue|exchange) '([^']*)'/.exec(detail);
    super(
      `RabbitMQ at ${url} denied the user access to ${
        object === null ? `virtual host "${vhost}"` : `${object[1]} "${object[2]}" in virtual host "${vhost}"`
      } (${detail}): grant it with rabbitmqctl set_permissions -p <vhost> <user> ".*" ".*" ".*" or narrower patterns covering Ferry's exchange and ferry:* queues`,
      options,
      'BROKER_PERMISSION_DENIED',
    );
    this.url = url;
    this.vhost = vhost;
  }
}
export const isBrokerPermissionDeniedError =
  errorGuard<BrokerPermissionDeniedError>('BROKER_PERMISSION_DENIED');

/**
 * The URL's scheme does not match the port: `amqps://` (TLS) to a plain AMQP port, where the broker
 * answers the TLS hello with its AMQP protocol header. Retrying cannot help.
 */
export class BrokerTlsMismatchError extends BrokerConnectionError {
  readonly url: string;
  constructor(url: string, options: { cause?: unknown } = {}) {
    super(
      `RabbitMQ at ${url} does not speak TLS on that port: use amqp:// for a plain port (5672 by default) or the broker's TLS port (5671 by default) with amqps://`,
      options,
      'BROKER_TLS_MISMATCH',
    );
    this.url = url;
  }
}
export const isBrokerTlsMismatchError = errorGuard<BrokerTlsMismatchError>('BROKER_TLS_MISMATCH');

const LOGIN_REFUSED = /ACCESS[-_]REFUSED/;
/** What amqplib reports when the broker closes the connection instead of opening the vhost. */
const OPEN_REFUSED = /^Expected ConnectionOpenOk; got <ConnectionClose/;

function vhostOf(url: string): string {
  const path = new URL(url).pathname;
  return path.length <= 1 ? '/' : decodeURIComponent(path.slice(1));
}

/**
 * Turns a connection failure that retrying cannot fix into its own error; resolves `undefined` for
 * what may be transient (broker down, network). amqplib does not say why the broker refused to open
 * the vhost, so a short handshake of our own asks.
 *
 * @param url the real URL, used for the probe; @param displayUrl the same with the password masked.
 */
export async function classifyConnectionError(
  error: unknown,
  url: string,
  displayUrl: string,
): Promise<BrokerConnectionError | undefined> {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | null)?.code;
  const vhost = vhostOf(url);
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number/.test(message)) {
    return new BrokerTlsMismatchError(displayUrl, { cause: error });
  }
  if (message.startsWith('Handshake terminated by server') && LOGIN_REFUSED.test(message)) {
    return new BrokerAccessRefusedError(displayUrl, { cause: error });
  }
  if (code === 403) {
    // A channel operation (declaring the exchange or a queue) refused on an open connection.
    return new BrokerPermissionDeniedError(displayUrl, vhost, message, { cause: error });
  }
  if (!OPEN_REFUSED.test(message)) return undefined;
  // Without the broker's reason (the probe failed), or for a refusal that can pass (a connection
  // limit reached, a vhost that is starting), keep retrying as before.
  const refusal = await probeVhostAccess(url).catch(() => undefined);
  if (refusal === undefined || /limit/i.test(refusal.replyText)) return undefined;
  if (/vhost .* not found/i.test(refusal.replyText))
    return new BrokerVhostNotFoundError(displayUrl, vhost, { cause: error });
  if (/refused for user/i.test(refusal.replyText))
    return new BrokerPermissionDeniedError(displayUrl, vhost, refusal.replyText, { cause: error });
  return undefined;
}
