/**
 * Orders checks the user and the products of an order with the tutorial's synchronous calls: GET
 * /users/:id and GET /products/:id over ServiceClient. Users and products are never deleted and a
 * product's price never changes, so a positive answer is kept (up to `maxEntries` of each, the
 * oldest dropped first): the hot path of POST /orders then calls nobody. An unknown id is asked
 * again every time (it may exist a moment later). `user.created` and `inventory.updated` fill the
 * same read model as they arrive (the orders service subscribes to them), so that most orders find
 * their user and products already known.
 */
import { HttpProblemError, type ServiceResponse } from 'ferry';
import type { Upstream } from '../upstream.js';
import type { OrderLookups } from './routes.js';

export function serviceLookups(
  users: Upstream,
  inventory: Upstream,
  options: { readonly maxEntries?: number } = {},
): OrderLookups {
  const max = options.maxEntries ?? 10_000;
  const knownUsers = new Map<string, { readonly id: string }>();
  const knownProducts = new Map<string, { readonly id: string; readonly price: number }>();

  function remember<V>(map: Map<string, V>, key: string, value: V): V {
    if (map.size >= max) map.delete(map.keys().next().value as string);
    map.set(key, value);
    return value;
  }

  async function find<V>(upstream: Upstream, path: string): Promise<V | undefined> {
    let response: ServiceResponse<V>;
    try {
      response = await upstream.request<V>({ method: 'GET', path });
    } catch (error) {
      // The cause (with the instance's address) goes to the log, not to the client.
      throw unavailable(`${upstream.name} cannot be reached`, error);
    }
    if (response.status === 404) return undefined;
    if (response.status !== 200) throw unavailable(`${upstream.name} answered ${response.status}`);
    return response.body;
  }

  return {
    userCreated(id) {
      remember(knownUsers, id, { id });
    },
    productUpdated(id, price) {
      remember(knownProducts, id, { id, price });
    },
    async findUser(id) {
      const known = knownUsers.get(id);
      if (known !== undefined) return known;
      const path = pathTo('/users/', id);
      const user = path === undefined ? undefined : await find<{ id: string }>(users, path);
      return user === undefined ? undefined : remember(knownUsers, id, { id: user.id });
    },
    async findProduct(id) {
      const known = knownProducts.get(id);
      if (known !== undefined) return known;
      const path = pathTo('/products/', id);
      const product =
        path === undefined ? undefined : await find<{ id: string; price: number }>(inventory, path);
      return product === undefined
        ? undefined
        : remember(knownProducts, id, { id: product.id, price: product.price });
    },
  };
}

/**
 * `prefix` and the id as one path segment; `undefined` for an id no URL can name (a lone surrogate,
 * which encodeURIComponent throws on), so that such an id is unknown rather than a 500. Ids the
 * URL would read as steps (`.`, `..`) are unknown too.
 */
function pathTo(prefix: string, id: string): string | undefined {
  if (id === '' || id === '.' || id === '..') return undefined;
  try {
    return prefix + encodeURIComponent(id);
  } catch {
    return undefined;
  }
}

/** 503 with Retry-After: the order was not placed, and trying again shortly is the right move. */
function unavailable(detail: string, cause?: unknown): HttpProblemError {
  return new HttpProblemError(503, 'Dependency unavailable', {
    detail: `${detail}; the order was not placed, try again.`,
    headers: { 'retry-after': '1' },
    ...(cause === undefined ? {} : { cause }),
  });
}
