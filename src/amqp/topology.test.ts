import { describe, expect, it } from 'vitest';
import { isInvalidTopicError } from '../messaging/errors.js';
import {
  deadLetterQueueName,
  encodePatternForQueue,
  MAX_QUEUE_NAME_BYTES,
  subscriptionTopology,
} from './topology.js';

const HOSTILE = [
  'dead-letter',
  'dead%2Dletter',
  'x:retry-1000ms',
  'x',
  'x%3Aretry-1000ms',
  'a:b',
  'a%3Ab',
  'a%b',
  'a%25b',
  '%',
  '%%',
  ':',
  '::',
  'a:b.c:d',
  'a.b:c.d',
  'a:b.*',
  'a:b.#',
  'order.*',
  'order.#',
  '#',
  '*',
  'x:retry-1000ms:retry-1000ms',
  'dead-letter:retry-1000ms',
  'zaměstnanec.přijat',
  '注文.作成',
  '🚚.*',
  'a%~b',
  'x'.repeat(255),
  `${'x'.repeat(254)}y`,
  'é'.repeat(127),
  `${'é'.repeat(127)}a`,
  `${'a:'.repeat(127)}a`,
  `${'a%'.repeat(127)}a`,
  `${'w.'.repeat(127)}#`,
];

function allNames(group: string, patterns: readonly string[], delays: readonly number[]): string[] {
  const names = [deadLetterQueueName(group)];
  for (const pattern of patterns) {
    const t = subscriptionTopology({ group, pattern, concurrency: 1, retryDelays: delays });
    names.push(t.queue, t.redeliveredQueue, ...t.retryQueues.values());
    expect(t.deadLetterQueue).toBe(deadLetterQueueName(group));
  }
  return names;
}

describe('AMQP queue names', () => {
  it('keep the old name of every pattern that could not collide', () => {
    const spec = { group: 'billing', concurrency: 1, retryDelays: [1000, 5000] };
    const t = subscriptionTopology({ ...spec, pattern: 'order.*' });
    expect(t.queue).toBe('ferry:billing:order.*');
    expect([...t.retryQueues.values()]).toEqual([
      'ferry:billing:order.*:retry-1000ms',
      'ferry:billing:order.*:retry-5000ms',
    ]);
    expect(subscriptionTopology({ ...spec, pattern: '注文.#' }).queue).toBe('ferry:billing:注文.#');
    expect(t.deadLetterQueue).toBe('ferry:billing:dead-letter');
    expect(t.redeliveredQueue).toBe('ferry:billing:order.*:redelivered');
  });

  it('never give a subscription the name of the dead-letter queue or of another derived queue', () => {
    const delays = [1000, 5000, 2_147_483_647];
    for (const group of ['g', 'x', 'a'.repeat(100)]) {
      const names = allNames(group, HOSTILE, delays);
      expect(new Set(names).size).toBe(names.length);
      for (const name of names) expect(Buffer.byteLength(name)).toBeLessThanOrEqual(MAX_QUEUE_NAME_BYTES);
    }
    expect(
      subscriptionTopology({ group: 'g', pattern: 'dead-letter', concurrency: 1, retryDelays: [] }).queue,
    ).not.toBe('ferry:g:dead-letter');
    expect(
      subscriptionTopology({ group: 'g', pattern: 'x', concurrency: 1, retryDelays: [1000] }).retryQueues.get(
        1000,
      ),
    ).not.toBe(
      subscriptionTopology({ group: 'g', pattern: 'x:retry-1000ms', concurrency: 1, retryDelays: [] }).queue,
    );
  });

  it('encode reversibly: percent-decoding gives the pattern back', () => {
    for (const pattern of HOSTILE) {
      expect(decodeURIComponentSafe(encodePatternForQueue(pattern))).toBe(pattern);
      expect(encodePatternForQueue(pattern)).not.toContain(':');
    }
  });

  it('cut long names to 255 bytes with a hash, keeping long patterns apart', () => {
    const group = 'g'.repeat(100);
    const a = subscriptionTopology({
      group,
      pattern: `${'x'.repeat(239)}a`,
      concurrency: 1,
      retryDelays: [1000],
    });
    const b = subscriptionTopology({
      group,
      pattern: `${'x'.repeat(239)}b`,
      concurrency: 1,
      retryDelays: [1000],
    });
    expect(a.queue).not.toBe(b.queue);
    expect(a.queue.startsWith(`ferry:${group}:xxx`)).toBe(true);
    expect(Buffer.byteLength(a.retryQueues.get(1000)!)).toBeLessThanOrEqual(MAX_QUEUE_NAME_BYTES);
    expect(Buffer.byteLength(a.redeliveredQueue)).toBeLessThanOrEqual(MAX_QUEUE_NAME_BYTES);
    // Multi-byte characters are never split.
    const u = subscriptionTopology({ group, pattern: 'é'.repeat(127), concurrency: 1, retryDelays: [] });
    expect(Buffer.from(u.queue).toString('utf8')).toBe(u.queue);
    expect(u.queue).not.toContain('\uFFFD');
  });

  it('reject an invalid pattern or group with INVALID_TOPIC', () => {
    const bad = [
      { group: 'g', pattern: 'x'.repeat(256) },
      { group: 'g', pattern: 'a..b' },
      { group: 'a:b', pattern: 'x' },
      { group: 'g', pattern: '' },
    ];
    for (const { group, pattern } of bad) {
      let thrown: unknown;
      try {
        subscriptionTopology({ group, pattern, concurrency: 1, retryDelays: [] });
      } catch (error) {
        thrown = error;
      }
      expect(isInvalidTopicError(thrown)).toBe(true);
    }
  });
});

function decodeURIComponentSafe(segment: string): string {
  return segment.replace(/%([0-9A-F]{2})/g, (_, hex: string) =>
    String.fromCharCode(Number.parseInt(hex, 16)),
  );
}
