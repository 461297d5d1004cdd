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
  // Prepared once: better-sqlite3 compiles a statement's SQL on every prepare().
  readonly #statements: ReturnType<typeof prepare>;
  readonly #charge: Database.Transaction<
    (orderId: string, amount: number, accepted: boolean) => ChargeAttempt
  >;
  readonly #refund: Database.Transaction<(orderId: string) => RefundOutcome>;

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
    const s = prepare(this.#db);
    this.#statements = s;
    this.#charge = this.#db.transaction(
      (orderId: string, amount: number, accepted: boolean): ChargeAttempt => {
        if (this.isVoided(orderId)) return { kind: 'voided' };
        const existing = this.find(orderId);
        if (existing !== undefined) return { kind: 'existing', charge: existing };
        if (!accepted) return { kind: 'declined' };
        const chargeId = `ch_${randomUUID().replaceAll('-', '')}`;
        s.insertCharge.run(orderId, chargeId, amount);
        return { kind: 'taken', charge: { chargeId, orderId, amount, refunded: false } };
      },
    );
    this.#refund = this.#db.transaction((orderId: string): RefundOutcome => {
      s.markRefunded.run(orderId);
      const charge = this.find(orderId);
      if (charge !== undefined) return { kind: 'refunded', charge };
      s.insertVoid.run(orderId, Date.now());
      return { kind: 'voided' };
    });
  }

  /** A setting kept with the ledger (the fault switch), as JSON; `undefined` when never set. */
  setting(name: string): unknown {
    const row = this.#statements.setting.get(name);
    return row === undefined ? undefined : JSON.parse(row.value);
  }

  saveSetting(name: string, value: unknown): void {
    this.#statements.saveSetting.run(name, JSON.stringify(value));
  }

  find(orderId: string): Charge | undefined {
    const row = this.#statements.findCharge.get(orderId);
    return row && toCharge(row);
  }

  /** Whether a refund found no charge for the order: it can never be charged. */
  isVoided(orderId: string): boolean {
    return this.#statements.findVoid.get(orderId) !== undefined;
  }

  /**
   * Charges the order, in one transaction: a voided order is refused, an order with a charge gets
   * that charge back, a new one is taken only when `accepted` (the payment method is good).
   */
  charge(orderId: string, amount: number, accepted: boolean): ChargeAttempt {
    return this.#charge.immediate(orderId, amount, accepted);
  }

  /** Refunds the order's charge (again: no change), or voids the order when it has none, in one transaction. */
  refund(orderId: string): RefundOutcome {
    return this.#refund.immediate(orderId);
  }

  /** The charges, oldest first (voids are not charges). */
  all(): Charge[] {
    return this.#statements.allCharges.all().map(toCharge);
  }

  close(): void {
    this.#db.close();
  }
}

function prepare(db: Database.Database) {
  return {
    setting: db.prepare<[string], { value: string }>('SELECT value FROM settings WHERE name = ?'),
    saveSetting: db.prepare<[string, string]>(
      'INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value',
    ),
    findCharge: db.prepare<[string], Row>('SELECT * FROM charges WHERE order_id = ?'),
    findVoid: db.prepare<[string], unknown>('SELECT 1 FROM voids WHERE order_id = ?'),
    insertCharge: db.prepare<[string, string, number]>(
      'INSERT INTO charges (order_id, charge_id, amount) VALUES (?, ?, ?)',
    ),
    markRefunded: db.prepare<[string]>('UPDATE charges SET refunded = 1 WHERE order_id = ?'),
    insertVoid: db.prepare<[string, number]>(
      'INSERT OR IGNORE INTO voids (order_id, voided_at) VALUES (?, ?)',
    ),
    allCharges: db.prepare<[], Row>('SELECT * FROM charges ORDER BY seq'),
  };
}
