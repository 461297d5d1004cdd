/** Whether `error` is better-sqlite3's refusal of a row that breaks a UNIQUE constraint (or the primary key's). */
export function isUniqueViolation(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === 'SQLITE_CONSTRAINT_UNIQUE';
}
