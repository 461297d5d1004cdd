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

  it('answers 400 problems for bad input and stores nothing', async () => {
    const s = await setup();
    const bad: [string, unknown, string?][] = [
      ['malformed email', { name: 'Ann', email: 'not-an-email' }],
      ['email with spaces inside', { name: 'Ann', email: 'ann @example.com' }],
      ['missing name', { email: 'ann@example.com' }],
      ['missing email', { name: 'Ann' }],
      ['empty name', { name: '  ', email: 'ann@example.com' }],
      ['number as name', { name: 42, email: 'ann@example.com' }],
      ['array body', [{ name: 'Ann', email: 'ann@example.com' }]],
      ['unknown field', { name: 'Ann', email: 'ann@example.com', admin: true }],
      ['__proto__ key', '{"name":"Ann","email":"ann@example.com","__proto__":{"admin":true}}'],
      ['malformed JSON', '{"name": "Ann",'],
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
  });

  it('answers 404 for an unknown user', async () => {
    const s = await setup();
    for (const id of [randomUUID(), '%00']) {
      const res = await fetch(`${s.users.url}/users/${id}`);
      expect(res.status, id).toBe(404);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    }
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
