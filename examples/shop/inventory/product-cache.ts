import type { RecordedEvent } from 'ferry';
import { type ProductEvent, type ProductState, productDecider, productStream } from './product.js';

/** Where a product's events are read: the store, or a unit of work (inside its transaction). */
export interface StreamReader {
  readStream(
    streamId: string,
    options?: { readonly fromVersion?: number },
  ): Promise<readonly RecordedEvent[]>;
}

/**
 * Products' states as last read, so that a product ordered all day is not folded from its first
 * event on every order: a load reads from the cached version on, and uses the cache only if the
 * event stored at that version is still the one it was built from (a commit that failed after the
 * read leaves another event, or none, there: then the whole stream is read again). Reads of
 * `GET /products/:id` keep one of their own: a product's stream grows by two events an order.
 */
export class ProductCache {
  readonly #entries = new Map<string, { state: ProductState; version: number; lastId: string }>();

  async load(reader: StreamReader, productId: string): Promise<{ state: ProductState; version: number }> {
    const streamId = productStream(productId);
    const cached = this.#entries.get(productId);
    let state: ProductState;
    let version: number;
    let lastId: string | undefined;
    const tail =
      cached === undefined ? [] : await reader.readStream(streamId, { fromVersion: cached.version });
    if (cached !== undefined && tail[0]?.id === cached.lastId) {
      state = tail
        .slice(1)
        .reduce((s, e) => productDecider.evolve(s, e as unknown as ProductEvent), cached.state);
      version = cached.version + tail.length - 1;
      lastId = tail.at(-1)?.id;
    } else {
      const events = await reader.readStream(streamId);
      state = events.reduce(
        (s, e) => productDecider.evolve(s, e as unknown as ProductEvent),
        productDecider.initialState(),
      );
      version = events.length - 1;
      lastId = events.at(-1)?.id;
    }
    if (lastId !== undefined) {
      if (this.#entries.size >= 10_000) this.#entries.delete(this.#entries.keys().next().value as string);
      this.#entries.set(productId, { state, version, lastId });
    }
    return { state, version };
  }
}
