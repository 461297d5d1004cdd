import { randomUUID } from 'node:crypto';

/** Database of the integration tests, from the environment; the default is the local `test` database. */
export function postgresTestUrl(): string {
  return process.env.FERRY_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
}

/** A fresh schema name, so that each test's tables meet no other test's. */
export function testSchemaName(prefix = 't'): string {
  return `${prefix}_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
}

/** Drops schemas created by tests. */
export async function dropSchemas(schemas: readonly string[]): Promise<void> {
  if (schemas.length === 0) return;
  const pg = (await import('pg')).default;
  const client = new pg.Client({ connectionString: postgresTestUrl() });
  await client.connect();
  try {
    for (const schema of schemas) await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await client.end();
  }
}
