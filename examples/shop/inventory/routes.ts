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
      const input = await validateRequest(newProduct, request.body, 'body');
      const { product } = await catalog.add(input);
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
