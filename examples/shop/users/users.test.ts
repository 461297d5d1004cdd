import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from 'ferry/testing';
import { describe, expect, it } from 'vitest';
import { cleanups, setup } from './test-kit.js';

describe('users', () => {
  it('registers a user, reads it back and publishes user.created', async () => {
    const s = await setup();
    const res = await s.post({ name: 'Ann', email: 'ann@example.com' });
    expect(res.status).toBe(201);
    const user = (await res.json()) as { id: string; createdAt: string };
    expect(user).toEqual({
      id: expect.any(String),
      name: 'Ann',
      email: 'ann@example.com',
      createdAt: expect.any(String),
    });
    expect(new Date(user.createdAt).toISOString()).toBe(user.createdAt);
    const read = await fetch(`${s.users.url}/users/${user.id}`);
    expect(read.status).toBe(200);
    expect(await read.json()).toEqual(user);
    await waitFor(() => s.created.length === 1, 'user.created');
    expect(s.created[0]?.data).toEqual({
      userId: user.id,
      name: 'Ann',
      email: 'ann@example.com',
      createdAt: user.createdAt,
    });
  });

  it('answers 409 for an email registered already, in any spelling', async () => {
    const s = await setup();
    expect((await s.post({ name: 'Ann', email: 'ann@example.com' })).status).toBe(201);
    const res = await s.post({ name: 'Other Ann', email: ' ANN@example.com ' });
    expect(res.status).toBe(409);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  });

  it('registers an email once under 20 concurrent registrations', async () => {
    const s = await setup();
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => s.post({ name: `Bob ${i}`, email: 'bob@example.com' })),
    );
    const statuses = answers.map((r) => r.status).sort();
    expect(statuses).toEqual([201, ...Array<number>(19).fill(409)]);
    expect((await s.events()).filter((e) => e.type === 'UserRegistered')).toHaveLength(1);
    await s.outbox.flush();
    await waitFor(() => s.created.length === 1, 'user.created');
  });

  it('registers one user per Idempotency-Key: sent again, at once or later, the first answer; with another body 422', async () => {
    const s = await setup();
    const key = { 'idempotency-key': randomUUID() };
    const ann = { name: 'Ann', email: 'ann@example.com' };
    const answers = await Promise.all(Array.from({ length: 10 }, () => s.post(ann, undefined, key)));
    expect(answers.map((r) => r.status)).toEqual(Array<number>(10).fill(201));
    const bodies = (await Promise.all(answers.map((r) => r.json()))) as { id: string }[];
    const first = bodies[0] as { id: string; createdAt: string };
    for (const body of bodies) expect(body).toEqual(first);
    expect(answers.filter((r) => r.headers.get('idempotent-replayed') === 'true')).toHaveLength(9);
    // Later, and with the key in double quotes (the same key), the same answer.
    for (const k of [key['idempotency-key'], `"${key['idempotency-key']}"`]) {
      const again = await s.post({ email: ' ann@example.com', name: 'Ann ' }, undefined, {
        'idempotency-key': k,
      });
      expect(again.status).toBe(201);
      expect(again.headers.get('location')).toBe(`/users/${first.id}`);
      expect(await again.json()).toEqual(first);
    }
    // Another body with the key: 422, even where the address is someone else's (not 409).
    expect((await s.post({ name: 'Bo', email: 'bo@example.com' })).status).toBe(201);
    for (const other of [
      { ...ann, name: 'Anne' },
      { ...ann, email: 'ANN@example.com' },
      { name: 'Ann', email: 'bo@example.com' },
      { name: 'Ann', email: 'cy@example.com' },
    ]) {
      const reused = await s.post(other, undefined, key);
      expect(reused.status, JSON.stringify(other)).toBe(422);
      expect(await reused.json()).toMatchObject({ code: 'IDEMPOTENCY_KEY_MISMATCH' });
    }
    // The address the refused request gave is still free; another key for Ann's is 409.
    expect(
      (await s.post({ name: 'Cy', email: 'cy@example.com' }, undefined, { 'idempotency-key': 'k2' })).status,
    ).toBe(201);
    expect((await s.post(ann, undefined, { 'idempotency-key': 'k3' })).status).toBe(409);
    const invalid = await s.post({ name: 'Di', email: 'di@example.com' }, undefined, {
      'idempotency-key': 'k'.repeat(256),
    });
    expect(invalid.status).toBe(400);
    expect(await invalid.json()).toMatchObject({ code: 'IDEMPOTENCY_KEY_INVALID' });
    const registered = (await s.events()).filter((e) => e.type === 'UserRegistered');
    expect(registered.map((e) => (e.data as { email: string }).email).sort()).toEqual([
      'ann@example.com',
      'bo@example.com',
      'cy@example.com',
    ]);
    await s.outbox.flush();
    await waitFor(() => s.created.length === 3, 'user.created');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(s.created.filter((m) => (m.data as { userId: string }).userId === first.id)).toHaveLength(1);
  });

  it('answers 400 problems for bad input and stores nothing', async () => {
    const s = await setup();
    const bad: [string, unknown, string?][] = [
      ['malformed email', { name: 'Ann', email: 'not-an-email' }],
      ['email with spaces inside', { name: 'Ann', email: 'ann @example.com' }],
      // Past what mail allows: a local part of 65 characters, a domain label of 64.
      ['email with a long local part', { name: 'Ann', email: `${'x'.repeat(65)}@example.com` }],
      ['email with a long domain label', { name: 'Ann', email: `ann@${'b'.repeat(64)}.example.com` }],
      // A domain label ends with a letter or digit (RFC 1035 2.3.1): z.email() refused only a hyphen first.
      ['email with a domain label ending in a hyphen', { name: 'Ann', email: 'ann@example-.com' }],
      [
        'email with an inner domain label ending in a hyphen',
        { name: 'Ann', email: 'ann@shop-.example.com' },
      ],
      ['email with a domain label starting with a hyphen', { name: 'Ann', email: 'ann@-example.com' }],
      ['missing name', { email: 'ann@example.com' }],
      ['missing email', { name: 'Ann' }],
      ['empty name', { name: '  ', email: 'ann@example.com' }],
      ['number as name', { name: 42, email: 'ann@example.com' }],
      ['array body', [{ name: 'Ann', email: 'ann@example.com' }]],
      ['unknown field', { name: 'Ann', email: 'ann@example.com', admin: true }],
      ['__proto__ key', '{"name":"Ann","email":"ann@example.com","__proto__":{"admin":true}}'],
      ['malformed JSON', '{"name": "Ann",'],
      // Text the event store cannot keep: refused here, not a 500 from the store.
      ['NUL in the name', { name: 'A\u0000nn', email: 'ann@example.com' }],
      ['a lone surrogate in the name', '{"name":"Ann \\ud800","email":"ann@example.com"}'],
      ['a line break inside the name', { name: 'An\nn', email: 'ann@example.com' }],
      ['an escape sequence in the name', { name: '\u001b[2JAnn', email: 'ann@example.com' }],
      ['NUL in the email', { name: 'Ann', email: 'ann\u0000@example.com' }],
      // Nested 5000 levels deep, as an object and as an array.
      ['a deeply nested object', `${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}`],
      ['a deeply nested array', `${'['.repeat(5000)}${']'.repeat(5000)}`],
      ['a deeply nested name', `{"name":${'['.repeat(5000)}${']'.repeat(5000)},"email":"ann@example.com"}`],
    ];
    for (const [what, body] of bad) {
      const res = await s.post(body);
      expect(res.status, what).toBe(400);
      expect(res.headers.get('content-type'), what).toMatch(/^application\/problem\+json/);
    }
    const notJson = await s.post('name=Ann&email=ann@example.com', 'application/x-www-form-urlencoded');
    expect(notJson.status).toBe(415);
    expect(notJson.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await s.events()).toEqual([]);
    // Still serving after all of it; at the limits, an address is taken.
    expect((await s.post({ name: 'Ann', email: 'ann@example.com' })).status).toBe(201);
    const atLimits = `${'x'.repeat(64)}@${'b'.repeat(63)}.example.com`;
    expect((await s.post({ name: 'Bo', email: atLimits })).status).toBe(201);
  });

  it('takes a body of up to 1 MB, as every public POST does, and refuses 2 MB with 413', async () => {
    const s = await setup();
    const padded = (email: string, bytes: number) => `{"name":"Ann","email":"${email}"}${' '.repeat(bytes)}`;
    expect((await s.post(padded('big@example.com', 1_000_000))).status).toBe(201);
    const huge = await s.post(padded('huge@example.com', 2 * 1024 * 1024));
    expect(huge.status).toBe(413);
    expect(huge.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect((await s.events()).filter((e) => e.type === 'UserRegistered')).toHaveLength(1);
  });

  it('keeps names in any script, emoji included', async () => {
    const s = await setup();
    const res = await s.post({ name: 'Zoë 王 🙂', email: 'zoe@example.com' });
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({ name: 'Zoë 王 🙂' });
  });

  it('answers 404 for an unknown user', async () => {
    const s = await setup();
    for (const id of [randomUUID(), '%00']) {
      const res = await fetch(`${s.users.url}/users/${id}`);
      expect(res.status, id).toBe(404);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    }
  });

  it('answers every copy of a keyed registration sent at once 201 on a SQLite file, with others in between', async () => {
    // Before, copies sharing a transaction with the first (group commit) found its user before it
    // was committed, and read nothing when they looked for it: 500 for about half of them.
    const dir = mkdtempSync(join(tmpdir(), 'shop-users-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const s = await setup(`sqlite:${join(dir, 'users.db')}`);
    const failed: string[] = [];
    for (let round = 0; round < 10; round++) {
      const key = { 'idempotency-key': `key-${round}` };
      const ann = { name: 'Ann', email: `ann-${round}@example.com` };
      const answers = await Promise.all([
        s.post(ann, undefined, key),
        s.post(ann, undefined, key),
        s.post({ name: 'Bo', email: `bo-${round}@example.com` }),
        s.post(ann, undefined, key),
      ]);
      const reused = await s.post({ ...ann, name: 'Another' }, undefined, key);
      const statuses = [...answers, reused].map((answer) => answer.status);
      if (statuses.join() !== '201,201,201,201,422') failed.push(`round ${round}: ${statuses.join()}`);
    }
    expect(failed).toEqual([]);
    expect((await s.events()).filter((e) => e.type === 'UserRegistered')).toHaveLength(20);
  });

  it('works the same on a SQLite file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shop-users-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const s = await setup(`sqlite:${join(dir, 'users.db')}`);
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => s.post({ name: 'Cy', email: 'cy@example.com' })),
    );
    expect(answers.map((r) => r.status).sort()).toEqual([201, ...Array<number>(19).fill(409)]);
    const user = (await answers.find((r) => r.status === 201)!.json()) as { id: string };
    expect((await fetch(`${s.users.url}/users/${user.id}`)).status).toBe(200);
    await waitFor(() => s.created.length === 1, 'user.created');
  });
});
