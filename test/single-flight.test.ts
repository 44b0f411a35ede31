import { describe, expect, it } from 'vitest';
import { singleFlight } from '../src/verification/single-flight.ts';
import { oldGenerationGrowth } from './fixture-command.ts';

/** A load whose calls are counted and settled by hand. */
function manualLoad() {
  const calls: { key: string; resolve(value: string): void; reject(err: Error): void }[] = [];
  const load = (key: string) => new Promise<string>((resolve, reject) => calls.push({ key, resolve, reject }));
  return { calls, load };
}

/** Bytes the old generation grew by while the fixture ran 100,000 lookups through a long-lived single flight. */
const growth = (kind: 'map' | 'single-flight'): number => oldGenerationGrowth('single-flight-churn.ts', [kind]);

describe('singleFlight', () => {
  it('gives concurrent callers with the same key one load and its answer', async () => {
    const { calls, load } = manualLoad();
    const lookup = singleFlight(load);
    const first = lookup('k');
    const second = lookup('k');
    expect(calls).toHaveLength(1);
    calls[0]!.resolve('answer');
    await expect(Promise.all([first, second])).resolves.toEqual(['answer', 'answer']);
  });

  it('loads again once the load settled, after a success and after a failure', async () => {
    const { calls, load } = manualLoad();
    const lookup = singleFlight(load);
    const failed = Promise.allSettled([lookup('k'), lookup('k')]);
    calls[0]!.reject(new Error('database down'));
    const outcomes = await failed;
    expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected']);
    expect((outcomes[0] as PromiseRejectedResult).reason).toEqual(new Error('database down'));

    const again = lookup('k');
    expect(calls).toHaveLength(2);
    calls[1]!.resolve('back');
    await expect(again).resolves.toBe('back');
    const third = lookup('k');
    expect(calls).toHaveLength(3);
    calls[2]!.resolve('fresh');
    await expect(third).resolves.toBe('fresh');
  });

  it('keeps other keys in flight when one of several settles, in either order', async () => {
    const { calls, load } = manualLoad();
    const lookup = singleFlight(load);
    const a = lookup('a');
    const b = lookup('b');
    const c = lookup('c');
    expect(calls.map((call) => call.key)).toEqual(['a', 'b', 'c']);
    calls[1]!.resolve('B');
    await expect(b).resolves.toBe('B');
    // a and c are still shared, b loads again.
    void lookup('a');
    void lookup('c');
    const b2 = lookup('b');
    expect(calls.map((call) => call.key)).toEqual(['a', 'b', 'c', 'b']);
    calls[0]!.resolve('A');
    calls[3]!.resolve('B2');
    await expect(a).resolves.toBe('A');
    await expect(b2).resolves.toBe('B2');
    // c is still in flight, and still shared.
    void lookup('c');
    expect(calls).toHaveLength(4);
    // c, the last in flight, settles; then every key loads again.
    calls[2]!.resolve('C');
    await expect(c).resolves.toBe('C');
    void lookup('a');
    void lookup('c');
    expect(calls.map((call) => call.key)).toEqual(['a', 'b', 'c', 'b', 'a', 'c']);
  });

  it('leaves nothing in the old generation per lookup once it has lived long enough to be there', () => {
    // The premise: a Map that deletes each settled entry rebuilds its table in the old generation.
    expect(growth('map')).toBeGreaterThan(5_000_000);
    expect(growth('single-flight')).toBeLessThan(1_000_000);
  });
});
