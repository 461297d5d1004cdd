import { dropSchemas, postgresTestUrl, testSchemaName, waitFor } from 'ferry/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { setup } from './test-kit.js';

const schemas: string[] = [];
afterAll(() => dropSchemas(schemas));

describe('users on PostgreSQL', () => {
  // Units of work commit in parallel here: the email claim's expected version is what lets one win.
  it('registers an email once under 20 concurrent registrations', async () => {
    const schema = testSchemaName('shop_users');
    schemas.push(schema);
    const s = await setup(`${postgresTestUrl()}?schema=${schema}`);
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => s.post({ name: `Dee ${i}`, email: 'dee@example.com' })),
    );
    expect(answers.map((r) => r.status).sort()).toEqual([201, ...Array<number>(19).fill(409)]);
    expect((await s.events()).filter((e) => e.type === 'UserRegistered')).toHaveLength(1);
    await waitFor(() => s.created.length === 1, 'user.created');
  });
});
