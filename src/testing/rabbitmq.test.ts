import amqp from 'amqplib';
import { describe, expect, it } from 'vitest';
import { createTestVhost } from './rabbitmq.js';

describe('createTestVhost', () => {
  // A 300-character prefix made a vhost RabbitMQ created and no AMQP client could open (the field
  // holds 255 bytes): buses retried, then failed BROKER_UNAVAILABLE. A prefix with `$(…)` ran in the
  // shell of a rabbitmqctl wrapper.
  it.each([
    ['too long for AMQP', 'p'.repeat(300)],
    ['empty', ''],
    ['with shell syntax', '$(touch /tmp/x)'],
    ['with a space', 'my tests'],
    ['not a string', 42],
    ['starting with a dash (rabbitmqctl read it as an option)', '-x'],
    ['with a letter outside ASCII', 'tëst'],
  ])('refuses a prefix %s with INVALID_OPTIONS, creating nothing', async (_what, prefix) => {
    const error = await createTestVhost(prefix as string).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS' });
    expect((error as Error).message).toMatch(/prefix must be 1 to 200 ASCII letters, digits/);
  });

  it('makes a vhost a client can open from the longest prefix it takes', async () => {
    const vhost = await createTestVhost('p'.repeat(200));
    try {
      const connection = await amqp.connect(vhost.url);
      await connection.close();
    } finally {
      await vhost.dispose();
    }
  });
});
