import { describe, expect, it } from 'vitest';
import { createBatchMap } from '../src/db/batch-map.ts';
import { oldGenerationGrowth } from './fixture-command.ts';

/** Bytes the old generation grew by while the fixture kept three rows a turn for 3,000 turns. */
const growth = (mode: 'cleared' | 'read-together'): number => oldGenerationGrowth('batch-map-promotion.ts', [mode]);

describe('a batch map', () => {
  it('holds what was set until its batch ends, then starts a new batch', () => {
    const ends: (() => void)[] = [];
    const rows = createBatchMap<string, number>((close) => ends.push(close));
    rows.set('a', 1);
    rows.set('b', 2);
    expect(ends).toHaveLength(1);
    expect([rows.get('a'), rows.get('b')]).toEqual([1, 2]);

    ends[0]!();
    expect(rows.get('a')).toBeUndefined();
    rows.set('a', 3);
    expect(ends).toHaveLength(2);
    expect(rows.get('a')).toBe(3);
    // A batch's end that comes late does not close the batch after it.
    ends[0]!();
    expect(rows.get('a')).toBe(3);
  });

  // src/db/batch-map.ts: each batch in a Map of its own, not one long-lived Map cleared every turn.
  it("keeps the rows read together out of V8's old generation, where one long-lived Map cleared every turn sent them", () => {
    // The premise: the cleared Map's old tables kept every turn's rows until a full collection.
    expect(growth('cleared')).toBeGreaterThan(2_000_000);
    expect(growth('read-together')).toBeLessThan(1_000_000);
  });
});
