import { describe, expect, it } from 'vitest';
import { KeyedTurns } from './keyed-turns.js';

/** A task that records when it starts and ends, and ends when told. */
function gated(log: string[], name: string) {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  return {
    open,
    task: async () => {
      log.push(`${name} start`);
      await gate;
      log.push(`${name} end`);
      return name;
    },
  };
}

describe('KeyedTurns', () => {
  it('runs the tasks of one key one at a time, in the order asked for, and those of other keys beside them', async () => {
    const turns = new KeyedTurns();
    const log: string[] = [];
    const a1 = gated(log, 'a1');
    const a2 = gated(log, 'a2');
    const b1 = gated(log, 'b1');
    const results = [turns.run('a', a1.task), turns.run('a', a2.task), turns.run('b', b1.task)];
    await Promise.resolve();
    expect(log).toEqual(['a1 start', 'b1 start']);
    a2.open();
    b1.open();
    await results[2];
    expect(log).toEqual(['a1 start', 'b1 start', 'b1 end']);
    a1.open();
    expect(await Promise.all(results)).toEqual(['a1', 'a2', 'b1']);
    expect(log).toEqual(['a1 start', 'b1 start', 'b1 end', 'a1 end', 'a2 start', 'a2 end']);
  });

  it('starts the next task after one that failed, and hands each caller its own outcome', async () => {
    const turns = new KeyedTurns();
    const failing = turns.run('k', async () => {
      throw new Error('first failed');
    });
    const throwingAtOnce = turns.run('k', () => {
      throw new Error('second threw');
    });
    const next = turns.run('k', async () => 'third ran');
    await expect(failing).rejects.toThrow('first failed');
    await expect(throwingAtOnce).rejects.toThrow('second threw');
    await expect(next).resolves.toBe('third ran');
  });

  it('turns a synchronous throw of a first task into a rejection', async () => {
    const turns = new KeyedTurns();
    const result = turns.run('k', () => {
      throw new Error('at once');
    });
    await expect(result).rejects.toThrow('at once');
    await expect(turns.run('k', async () => 1)).resolves.toBe(1);
  });
});
