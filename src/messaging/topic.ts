import { describeValue } from '../errors/describe-value.js';
import { InvalidTopicError } from './errors.js';
import { isWellFormed } from './well-formed.js';

const MAX_TOPIC_BYTES = 255;
const WORD = /^[^.*#\s]+$/;

function checkLength(topic: string): void {
  if (topic.length === 0) throw new InvalidTopicError(topic, 'it is empty');
  // RabbitMQ would route it as another topic, with U+FFFD in place of the surrogate.
  if (!isWellFormed(topic))
    throw new InvalidTopicError(topic, 'it contains a lone surrogate (no UTF-8 form)');
  // PostgreSQL text holds no NUL: an outbox relay could not record the broker's refusal of it.
  if (topic.includes('\u0000')) throw new InvalidTopicError(topic, 'it contains NUL');
  if (Buffer.byteLength(topic) > MAX_TOPIC_BYTES) {
    throw new InvalidTopicError(topic, `it is longer than ${MAX_TOPIC_BYTES} bytes`);
  }
}

const validTypes = new Set<string>();

/**
 * Throws unless `type` is a publishable message type: dot-separated non-empty words without
 * wildcards, whitespace, NUL or lone surrogates, at most 255 bytes of UTF-8. Valid types are remembered, so the check is a set lookup on the hot path.
 */
export function assertMessageType(type: string): void {
  if (validTypes.has(type)) return;
  if (typeof type !== 'string')
    throw new InvalidTopicError(describeValue(type), 'a message type must be a string');
  checkLength(type);
  for (const word of type.split('.')) {
    if (!WORD.test(word)) {
      throw new InvalidTopicError(
        type,
        `"${word}" is not a valid word (no empty words, "*", "#" or whitespace)`,
      );
    }
  }
  if (validTypes.size < 10_000) validTypes.add(type);
}

/** Throws unless `pattern` is a valid subscription pattern (words, `*` or `#`, dot-separated). */
export function assertPattern(pattern: string): void {
  if (typeof pattern !== 'string')
    throw new InvalidTopicError(describeValue(pattern), 'a pattern must be a string');
  checkLength(pattern);
  for (const word of pattern.split('.')) {
    if (word !== '*' && word !== '#' && !WORD.test(word)) {
      throw new InvalidTopicError(pattern, `"${word}" is not a word, "*" or "#"`);
    }
  }
}

/**
 * Compiles an AMQP topic pattern into a predicate: `*` matches exactly one word, `#` zero or more.
 * The same semantics serve every transport, so a subscription means the same thing everywhere.
 */
export function compilePattern(pattern: string): (type: string) => boolean {
  assertPattern(pattern);
  if (!pattern.includes('*') && !pattern.includes('#')) return (type) => type === pattern;
  if (pattern === '#') return () => true;
  const p = pattern.split('.');
  return (type) => matchWords(p, type.split('.'));
}

function matchWords(p: readonly string[], t: readonly string[]): boolean {
  // reachable[j] is true when the pattern prefix processed so far can consume exactly t[0..j).
  let reachable = new Array<boolean>(t.length + 1).fill(false);
  reachable[0] = true;
  for (const word of p) {
    const next = new Array<boolean>(t.length + 1).fill(false);
    for (let j = 0; j <= t.length; j++) {
      if (!reachable[j]) continue;
      if (word === '#') {
        for (let k = j; k <= t.length; k++) next[k] = true;
        break;
      }
      if (j < t.length && (word === '*' || word === t[j])) next[j + 1] = true;
    }
    reachable = next;
  }
  return reachable[t.length] === true;
}

const GROUP = /^[A-Za-z0-9_-]{1,100}$/;

/** Throws unless `group` is a valid group name: letters, digits, `_` and `-`, at most 100 characters. */
export function assertGroup(group: string): void {
  if (typeof group !== 'string' || !GROUP.test(group)) {
    throw new InvalidTopicError(
      typeof group === 'string' ? group : describeValue(group),
      'a group (and a service name) is 1-100 letters, digits, "_" or "-"',
    );
  }
}
