import { describe, expect, it } from 'vitest';
import { parseRequestHeaders } from './request-context.js';
import { childTraceparent, newTraceparent, parseTraceparent } from './traceparent.js';

const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const INCOMING = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('traceparent', () => {
  it('validates the W3C format', () => {
    expect(parseTraceparent(INCOMING)).toEqual({
      version: '00',
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      parentId: '00f067aa0ba902b7',
      flags: '01',
    });
    const invalid = [
      'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', // version ff is invalid
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01', // zero trace id
      '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01', // zero parent id
      '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01', // upper case
      '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01', // short trace id
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1',
      `${INCOMING}-extra`,
    ];
    for (const value of invalid) expect(parseTraceparent(value), value).toBeUndefined();
  });

  it('reads a later version by its first four fields and ignores the rest', () => {
    const fields = '4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    for (const value of [
      `01-${fields}`,
      `01-${fields}-extra`,
      `cc-${fields}-what-the-future-will-be`,
      `fe-${fields}-`,
    ]) {
      expect(parseTraceparent(value), value).toEqual({
        version: value.slice(0, 2),
        traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
        parentId: '00f067aa0ba902b7',
        flags: '01',
      });
    }
    const invalid = [
      `01-${fields}extra`, // more after the flags, but not behind a dash
      `01-${fields}.extra`,
      `ff-${fields}-extra`, // version ff is invalid whatever follows
      `0g-${fields}`, // version not hex
      `0A-${fields}`, // upper case version
      `1-${fields}`, // one-digit version
      `001-${fields}`,
      '01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1', // shorter than 55
      '01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7', // no flags
      '01-00000000000000000000000000000000-00f067aa0ba902b7-01-x', // zero trace id
      '01-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01-x', // zero parent id
      '01-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01-x', // wrong separator
      `01-${fields.toUpperCase()}-x`,
      `00-${fields}-`, // version 00 is exactly 55 characters
      `00-${fields}-extra`,
    ];
    for (const value of invalid) expect(parseTraceparent(value), value).toBeUndefined();
  });

  it('continues a later-version trace as version 00', () => {
    const child = childTraceparent('01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra');
    expect(child).toMatch(TRACEPARENT);
    expect(child).toHaveLength(55);
    expect(child.startsWith('00-4bf92f3577b34da6a3ce929d0e0e4736-')).toBe(true);
    expect(child.endsWith('-01')).toBe(true);
    expect(child).not.toContain('00f067aa0ba902b7');
    const parsed = parseRequestHeaders({
      traceparent: '02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x',
    }).traceparent;
    expect(parseTraceparent(parsed)).toMatchObject({
      version: '00',
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      flags: '00',
    });
  });

  it('passes on only the sampled flag, zeroing the bits it does not know', () => {
    const trace = '4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7';
    const cases: [string, string][] = [
      ['00', '00'],
      ['01', '01'],
      ['02', '00'],
      ['03', '01'],
      ['fe', '00'],
      ['ff', '01'],
      ['81', '01'],
    ];
    for (const [flags, passed] of cases) {
      expect(parseTraceparent(`00-${trace}-${flags}`)?.flags, flags).toBe(flags);
      expect(childTraceparent(`00-${trace}-${flags}`).slice(53), flags).toBe(passed);
      expect(childTraceparent(`01-${trace}-${flags}-x`).slice(53), flags).toBe(passed);
    }
  });

  it('creates a child with the same trace id and flags and a new parent id', () => {
    const child = childTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00');
    const parsed = parseTraceparent(child);
    expect(parsed?.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(parsed?.parentId).not.toBe('00f067aa0ba902b7');
    expect(parsed?.flags).toBe('00');
    expect(childTraceparent(child)).not.toBe(child);
  });

  it('starts a new trace when there is none to continue', () => {
    const a = newTraceparent();
    const b = childTraceparent('garbage');
    expect(a).toMatch(TRACEPARENT);
    expect(b).toMatch(TRACEPARENT);
    expect(parseTraceparent(a)?.traceId).not.toBe(parseTraceparent(b)?.traceId);
  });
});
