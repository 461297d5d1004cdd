/**
 * The catalog over HTTP: `POST /products` (operators only, with the admin token) and
 * `GET /products/:id`. Every error is a problem+json document (ferry/fastify).
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { type EventStore, HttpProblemError, isConcurrencyError, type Outbox, validateRequest } from 'ferry';
import { z } from 'zod';
import { requireAdmin } from '../admin-token.js';
import type { ShopContracts } from '../contracts.js';
import { keyedId, keyReused } from '../keyed-id.js';
import { printable } from '../text.js';
import { isProductId, productStream, productView } from './product.js';
import { ProductCache } from './product-cache.js';

export const newProduct = z.strictObject({
  name: printable(z.string().trim().min(1).max(200)),
  price: z.number().int().nonnegative().max(100_000_000), // cents
  stock: z.number().int().nonnegative().max(1_000_000_000),
});
export type NewProduct = z.infer<typeof newProduct> & { readonly id?: string };
export type ProductView = ReturnType<typeof productView>;

export function catalog(store: EventStore, outbox: Outbox<ShopContracts>) {
  // A product's stream grows by two events an order: folded from its first event on every read,
  // a product ordered all day took tens of milliseconds to read, and longer each day.
  const products = new ProductCache();

  return {
    /** Adds a product; with an `id` already taken, returns that product unchanged (seeding twice is harmless). */
    async add(input: NewProduct): Promise<{ created: boolean; product: ProductView }> {
      const productId = input.id ?? randomUUID();
      const { name, price, stock } = input;
      try {
        await outbox.append(
          productStream(productId),
          [{ type: 'ProductAdded', data: { productId, name, price, stock } }],
          {
            expectedVersion: 'no_stream',
            messages: [
              {
                type: 'inventory.updated',
                data: { productId, price, stock, reserved: 0, version: 0 },
              },
            ],
          },
        );
        return { created: true, product: { id: productId, name, price, stock, reserved: 0 } };
      } catch (error) {
        if (!isConcurrencyError(error) || input.id === undefined) throw error;
        const existing = await this.get(productId);
        if (existing === undefined) throw error;
        return { created: false, product: existing };
      }
    },

    /** The product as it was added (its first answer), if `productId` names one. */
    async added(productId: string): Promise<ProductView | undefined> {
      if (!isProductId(productId)) return undefined;
      const [first] = await store.readStream(productStream(productId), { limit: 1 });
      if (first?.type !== 'ProductAdded') return undefined;
      const { name, price, stock } = first.data as NewProduct;
      return { id: productId, name, price, stock, reserved: 0 };
    },

    async get(productId: string): Promise<ProductView | undefined> {
      if (!isProductId(productId)) return undefined;
      const { state } = await products.load(store, productId);
      return state.exists ? productView(productId, state) : undefined;
    },
  };
}

export type Catalog = ReturnType<typeof catalog>;

/** What the README promises every public POST: a JSON body of up to 1 MB. */
const BODY_LIMIT = 1_048_576;

export function catalogRoutes(app: FastifyInstance, catalog: Catalog, adminToken: string | undefined): void {
  // The token before the body: a caller without it gets 401 whatever it sends.
  app.post(
    '/products',
    { bodyLimit: BODY_LIMIT, onRequest: async (request) => requireAdmin(request, adminToken) },
    async (request, reply) => {
      // With an Idempotency-Key, the key names the product: sent again, the request finds the product
      // its key added, and answers as the first did (its stock as added, not as it is now).
      const keyed = keyedId(request, 'shop-product');
      const input = await validateRequest(newProduct, request.body, 'body');
      let { created, product } = await catalog.add(keyed === undefined ? input : { ...input, id: keyed });
      if (!created) {
        const first = await catalog.added(product.id);
        if (first === undefined) throw new Error(`product ${product.id} has no ProductAdded event`);
        if (first.name !== input.name || first.price !== input.price || first.stock !== input.stock) {
          throw keyReused('product');
        }
        product = first;
        reply.header('idempotent-replayed', 'true');
      }
      return reply
        .code(201)
        .header('location', `/products/${encodeURIComponent(product.id)}`)
        .send(product);
    },
  );

  app.get<{ Params: { id: string } }>('/products/:id', async (request) => {
    const product = await catalog.get(request.params.id);
    if (product === undefined) throw new HttpProblemError(404, undefined, { detail: 'No such product.' });
    return product;
  });
}
