/**
 * The shop as its users meet it: plain HTTP calls to the gateway (fetch), and the checks every
 * end-to-end test makes — every order ends confirmed or cancelled, the provider's ledger and the
 * stock add up.
 */
import { randomUUID } from 'node:crypto';
import { waitFor } from 'ferry/testing';

export interface Answer<T = unknown> {
  readonly status: number;
  readonly type: string;
  readonly body: T;
  readonly headers: Headers;
}

export interface OrderView {
  readonly id: string;
  readonly userId: string;
  readonly items: readonly { productId: string; quantity: number; price: number }[];
  readonly total: number;
  readonly status: 'pending' | 'confirmed' | 'cancelled';
  readonly reason?: string;
  readonly history: readonly { event: string; at: string; reason?: string }[];
}

export interface ProductView {
  readonly id: string;
  readonly name: string;
  readonly price: number;
  readonly stock: number;
  readonly reserved: number;
}

export interface Charge {
  readonly chargeId: string;
  readonly orderId: string;
  readonly amount: number;
  readonly refunded: boolean;
}

export class ShopClient {
  constructor(
    readonly url: string,
    readonly adminToken: string,
  ) {}

  async call<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Answer<T>> {
    const init: RequestInit = { method, headers: { ...headers } };
    if (body !== undefined) {
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
      (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
    }
    const response = await fetch(`${this.url}${path}`, init);
    const text = await response.text();
    const type = response.headers.get('content-type') ?? '';
    return {
      status: response.status,
      type,
      body: (type.includes('json') ? JSON.parse(text) : text) as T,
      headers: response.headers,
    };
  }

  /** `call`, expecting `status`: fails with the whole answer otherwise. */
  async expect<T = unknown>(
    status: number,
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ) {
    const answer = await this.call<T>(method, path, body, headers);
    if (answer.status !== status) {
      throw new Error(
        `${method} ${path}: expected ${status}, got ${answer.status} ${JSON.stringify(answer.body)}`,
      );
    }
    return answer.body;
  }

  get admin(): Record<string, string> {
    return { authorization: `Bearer ${this.adminToken}` };
  }

  async createUser(name = 'Ada'): Promise<{ id: string; email: string }> {
    return this.expect(201, 'POST', '/users', {
      name,
      email: `${name.toLowerCase()}-${randomUUID()}@example.com`,
    });
  }

  async addProduct(stock: number, price = 500, name = 'Test product'): Promise<ProductView> {
    return this.expect(201, 'POST', '/products', { name, price, stock }, this.admin);
  }

  product(id: string): Promise<ProductView> {
    return this.expect(200, 'GET', `/products/${encodeURIComponent(id)}`);
  }

  async order(
    userId: string,
    items: readonly { productId: string; quantity: number }[],
    paymentMethod?: string,
    headers?: Record<string, string>,
  ): Promise<OrderView> {
    const body = { userId, items, ...(paymentMethod === undefined ? {} : { paymentMethod }) };
    return this.expect(201, 'POST', '/orders', body, headers);
  }

  getOrder(id: string): Promise<OrderView> {
    return this.expect(200, 'GET', `/orders/${id}`);
  }

  /** Waits until the order is confirmed or cancelled, and answers it. */
  async settled(id: string, timeoutMs = 30_000): Promise<OrderView> {
    let order: OrderView | undefined;
    await waitFor(
      async () => {
        order = await this.getOrder(id);
        return order.status !== 'pending';
      },
      () => `order ${id} to end (still ${order?.status})`,
      timeoutMs,
    );
    return order as OrderView;
  }

  async setFaults(faults: { failureRate?: number; latencyMs?: number }): Promise<void> {
    await this.expect(200, 'PUT', '/admin/faults/payment-provider', faults, this.admin);
  }

  charges(): Promise<Charge[]> {
    return this.expect(200, 'GET', '/admin/payment-provider/charges', undefined, this.admin);
  }
}

/**
 * What must hold once every order has ended: the ledger has exactly one unrefunded charge of the
 * order's total per confirmed order, and no unrefunded charge for a cancelled one.
 */
export function ledgerProblems(orders: readonly OrderView[], charges: readonly Charge[]): string[] {
  const problems: string[] = [];
  const byOrder = new Map<string, Charge[]>();
  for (const charge of charges) byOrder.set(charge.orderId, [...(byOrder.get(charge.orderId) ?? []), charge]);
  for (const order of orders) {
    const kept = (byOrder.get(order.id) ?? []).filter((c) => !c.refunded);
    if (order.status === 'pending') problems.push(`order ${order.id} is still pending`);
    if (order.status === 'confirmed' && (kept.length !== 1 || kept[0]?.amount !== order.total)) {
      problems.push(
        `confirmed order ${order.id} has ${kept.length} unrefunded charge(s): ${JSON.stringify(kept)}`,
      );
    }
    if (order.status === 'cancelled' && kept.length > 0) {
      problems.push(`cancelled order ${order.id} (${order.reason}) keeps a charge: ${JSON.stringify(kept)}`);
    }
    if ((byOrder.get(order.id)?.length ?? 0) > 1) problems.push(`order ${order.id} was charged twice`);
  }
  return problems;
}
