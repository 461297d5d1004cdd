/**
 * Names RabbitMQ reads itself, exactly as it reads them (its header lookup is case-sensitive): `CC`
 * and `BCC` route copies of the message to more queues (sender-selected distribution), and a string
 * there makes the broker close the channel.
 */
const ROUTING_HEADERS = new Set(['CC', 'BCC']);
/**
 * Names Ferry or RabbitMQ own, in any case: Ferry's `x-ferry-*` and the CloudEvents attributes on the
 * wire (`cloudEvents:*`), the broker's `x-death`, `x-first-death-*`, `x-last-death-*`,
 * `x-delivery-count`, the delayed-message plugin's `x-delay`, the shovel's and federation's
 * `x-received-from`. Case-insensitive so that `X-Ferry-Attempt` is refused as `x-ferry-attempt` is,
 * rather than carried by one transport and confused with Ferry's own by a reader that ignores case.
 * Other `x-` names (`x-tenant`, `x-request-id`, and `x-deathly` or `x-delivery-count2`, which only
 * start like a reserved name) are the application's. The `i` flag without `u` folds ASCII letters only.
 */
const RESERVED_NAME =
  /^(?:x-ferry-|cloudevents:|x-death$|x-first-death|x-last-death|x-delivery-count$|x-delay$|x-received-from$)/i;

/**
 * True for a header name that belongs to Ferry, the broker or its plugins, not to the application:
 * one RabbitMQ routes by (`CC`, `BCC`), or one Ferry, the broker or its plugins read (`x-ferry-*`,
 * `cloudEvents:*`, `x-death`…, in any case). The one list for both directions: publishing refuses
 * these names, and decoding a received message keeps them from handlers, so that every header a
 * handler sees can be published again, on every transport.
 */
export function isReservedHeader(name: string): boolean {
  return ROUTING_HEADERS.has(name) || RESERVED_NAME.test(name);
}
