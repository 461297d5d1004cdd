/**
 * The provider's ledger: one charge per order at most, kept in SQLite (a file, or `:memory:`).
 * A file, because the provider stands for a system outside the shop: it must outlive a restart of
 * the shop's processes, or a charge redelivered after a crash would find no trace of the first one.
 *
 * A refund of an order without a charge voids the order: a charge request still on its way (slow,
 * or retried by a caller that gave up waiting) must not be taken after its refund was asked for, or
 * it would stay taken for an order that was cancelled. Voids are kept apart from the charges.
 */
import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';

export interface Charge {
  readonly chargeId: string;
  readonly orderId: string;
  readonly amount: number;
  readonly refunded: boolean;
}

interface Row {
  charge_id: string;
  order_id: string;
  amount: number;
  refunded: number;
}

const toCharge = (row: Row): Charge => ({
  chargeId: row.charge_id,
  orderId: row.order_id,
  amount: row.amount,
  refunded: row.refunded === 1,
});

/** What a charge request met: a new charge, the order's charge already taken, a decline, a void. */
export type ChargeAttempt =
  | { readonly kind: 'taken' | 'existing'; readonly charge: Charge }
  | { readonly kind: 'declined' | 'voided' };

/** What a refund did: the order's charge refunded (now or before), or the order voided (no charge). */
export type RefundOutcome =
  | { readonly kind: 'refunded'; readonly charge: Charge }
  | { readonly kind: 'voided' };

export class Ledger {
  readonly #db: Database.Database;

  /** @param file a SQLite file, or `:memory:` for a ledger that lives as long as the process. */
  constructor(file = ':memory:') {
    this.#db = new Database(file);
    this.#db.pragma('journal_mode = WAL');
    this.#db.exec(`CREATE TABLE IF NOT EXISTS charges (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      order_id TEXT NOT NULL UNIQUE,
      charge_id TEXT NOT NULL UNIQUE,
      amount INTEGER NOT NULL,
      refunded INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS voids (
      order_id TEXT PRIMARY KEY,
      voided_at INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS settings (
      name TEXT PRIMARY KEY,
      value TEXT NOT NULL
    )`);
  }

  /** A setting kept with the ledger (the fault switch), as JSON; `undefined` when never set. */
  setting(name: string): unknown {
    const row = this.#db.prepare('SELECT value FROM settings WHERE name = ?').get(name) as
      | { value: string }
      | undefined;
    return row === undefined ? undefined : JSON.parse(row.value);
  }

  saveSetting(name: string, value: unknown): void {
    this.#db
      .prepare(
        'INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value',
      )
      .run(name, JSON.stringify(value));
  }

  find(orderId: string): Charge | undefined {
    const row = this.#db.prepare('SELECT * FROM charges WHERE order_id = ?').get(orderId) as Row | undefined;
    return row && toCharge(row);
  }

  /** Whether a refund found no charge for the order: it can never be charged. */
  isVoided(orderId: string): boolean {
    return this.#db.prepare('SELECT 1 FROM voids WHERE order_id = ?').get(orderId) !== undefined;
  }

  /**
   * Charges the order, in one transaction: a voided order is refused, an order with a charge gets
   * that charge back, a new one is taken only when `accepted` (the payment method is good).
   */
  charge(orderId: string, amount: number, accepted: boolean): ChargeAttempt {
    return this.#db
      .transaction((): ChargeAttempt => {
        if (this.isVoided(orderId)) return { kind: 'voided' };
        const existing = this.find(orderId);
        if (existing !== undefined) return { kind: 'existing', charge: existing };
        if (!accepted) return { kind: 'declined' };
        const chargeId = `ch_${randomUUID().replaceAll('-', '')}`;
        this.#db
          .prepare('INSERT INTO charges (order_id, charge_id, amount) VALUES (?, ?, ?)')
          .run(orderId, chargeId, amount);
        return { kind: 'taken', charge: { chargeId, orderId, amount, refunded: false } };
      })
      .immediate();
  }

  /** Refunds the order's charge (again: no change), or voids the order when it has none, in one transaction. */
  refund(orderId: string): RefundOutcome {
    return this.#db
      .transaction((): RefundOutcome => {
        this.#db.prepare('UPDATE charges SET refunded = 1 WHERE order_id = ?').run(orderId);
        const charge = this.find(orderId);
        if (charge !== undefined) return { kind: 'refunded', charge };
        this.#db
          .prepare('INSERT OR IGNORE INTO voids (order_id, voided_at) VALUES (?, ?)')
          .run(orderId, Date.now());
        return { kind: 'voided' };
      })
      .immediate();
  }

  /** The charges, oldest first (voids are not charges). */
  all(): Charge[] {
    return (this.#db.prepare('SELECT * FROM charges ORDER BY seq').all() as Row[]).map(toCharge);
  }

  close(): void {
    this.#db.close();
  }
}
