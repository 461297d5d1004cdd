/**
 * The provider's ledger: one charge per order at most, kept in SQLite (a file, or `:memory:`).
 * A file, because the provider stands for a system outside the shop: it must outlive a restart of
 * the shop's processes, or a charge redelivered after a crash would find no trace of the first one.
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
    )`);
  }

  find(orderId: string): Charge | undefined {
    const row = this.#db.prepare('SELECT * FROM charges WHERE order_id = ?').get(orderId) as Row | undefined;
    return row && toCharge(row);
  }

  /** Takes a charge for the order; the caller has checked that there is none yet (the order id is UNIQUE). */
  charge(orderId: string, amount: number): Charge {
    const chargeId = `ch_${randomUUID().replaceAll('-', '')}`;
    this.#db
      .prepare('INSERT INTO charges (order_id, charge_id, amount) VALUES (?, ?, ?)')
      .run(orderId, chargeId, amount);
    return { chargeId, orderId, amount, refunded: false };
  }

  /** Marks the order's charge refunded (again: no change). `undefined` when there is no charge. */
  refund(orderId: string): Charge | undefined {
    this.#db.prepare('UPDATE charges SET refunded = 1 WHERE order_id = ?').run(orderId);
    return this.find(orderId);
  }

  all(): Charge[] {
    return (this.#db.prepare('SELECT * FROM charges ORDER BY seq').all() as Row[]).map(toCharge);
  }

  close(): void {
    this.#db.close();
  }
}
