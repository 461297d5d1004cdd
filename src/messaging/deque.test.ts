import { describe, expect, it } from 'vitest';
import { Deque } from './deque.js';

describe('Deque', () => {
  it('is empty when new', () => {
    const deque = new Deque<number>();
    expect(deque.length).toBe(0);
    expect(deque.peek()).toBeUndefined();
    expect(deque.shift()).toBeUndefined();
    expect(deque.drain()).toEqual([]);
  });

  it('shifts items in the order they were pushed', () => {
    const deque = new Deque<string>();
    deque.push('a');
    deque.push('b');
    deque.push('c');
    expect(deque.length).toBe(3);
    expect(deque.shift()).toBe('a');
    expect(deque.shift()).toBe('b');
    expect(deque.length).toBe(1);
    deque.push('d');
    expect(deque.shift()).toBe('c');
    expect(deque.shift()).toBe('d');
    expect(deque.shift()).toBeUndefined();
    expect(deque.length).toBe(0);
  });

  it('peeks at the first item without removing it', () => {
    const deque = new Deque<number>();
    deque.push(1);
    deque.push(2);
    expect(deque.peek()).toBe(1);
    expect(deque.peek()).toBe(1);
    expect(deque.length).toBe(2);
    deque.shift();
    expect(deque.peek()).toBe(2);
    deque.shift();
    expect(deque.peek()).toBeUndefined();
  });

  it('drains the remaining items in order and is empty and usable after', () => {
    const deque = new Deque<number>();
    for (let i = 0; i < 5; i++) deque.push(i);
    deque.shift();
    deque.shift();
    expect(deque.drain()).toEqual([2, 3, 4]);
    expect(deque.length).toBe(0);
    expect(deque.peek()).toBeUndefined();
    deque.push(9);
    expect(deque.shift()).toBe(9);
  });

  it('keeps FIFO order across many items, with shifts interleaved with pushes', () => {
    const deque = new Deque<number>();
    const out: number[] = [];
    let next = 0;
    // Grow to several thousand, then drain partially while still pushing, so the backing array is
    // compacted several times mid-stream.
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 1500; i++) deque.push(next++);
      for (let i = 0; i < 1200; i++) out.push(deque.shift()!);
      expect(deque.length).toBe(next - out.length);
      expect(deque.peek()).toBe(out.length);
    }
    while (deque.length > 0) out.push(deque.shift()!);
    expect(out).toEqual(Array.from({ length: next }, (_, i) => i));
    expect(deque.shift()).toBeUndefined();
  });

  it('keeps order when draining after many shifts', () => {
    const deque = new Deque<number>();
    for (let i = 0; i < 5000; i++) deque.push(i);
    for (let i = 0; i < 3000; i++) expect(deque.shift()).toBe(i);
    expect(deque.length).toBe(2000);
    expect(deque.drain()).toEqual(Array.from({ length: 2000 }, (_, i) => 3000 + i));
  });

  it('puts items back before the first, in their order, after shifts', () => {
    const deque = new Deque<number>();
    for (let i = 0; i < 10; i++) deque.push(i);
    for (let i = 0; i < 4; i++) deque.shift();
    deque.unshiftAll([2, 3]);
    deque.unshiftAll([]);
    expect(deque.length).toBe(8);
    expect(deque.peek()).toBe(2);
    expect(deque.drain()).toEqual([2, 3, 4, 5, 6, 7, 8, 9]);
  });
});
