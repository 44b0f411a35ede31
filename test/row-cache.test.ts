import { describe, expect, it } from 'vitest';
import { createRowCache, MAX_ROWS, type CachedRow } from '../adapters/row-cache.ts';

const row = (id: string, grantId: string | null = null): CachedRow => ({ payload: JSON.stringify({ jti: id }), consumed_at: null, grant_id: grantId });

describe('the row cache', () => {
  it('answers a row, a known absence (null) or nothing to know, per model', () => {
    const cache = createRowCache();
    const token = row('t1');
    cache.set('AccessToken', 't1', null, 1);
    cache.set('ClientCredentials', 't1', token, 1);
    expect(cache.get('AccessToken', 't1', 1)).toBeNull();
    expect(cache.get('ClientCredentials', 't1', 1)).toBe(token);
    expect(cache.get('RefreshToken', 't1', 1)).toBeUndefined();
  });

  it('is emptied when the database changed (another data_version)', () => {
    const cache = createRowCache();
    cache.set('ClientCredentials', 't1', row('t1'), 1);
    expect(cache.get('ClientCredentials', 't1', 2)).toBeUndefined();
    cache.set('ClientCredentials', 't1', row('t1'), 2);
    expect(cache.get('ClientCredentials', 't1', 2)).toBeDefined();
  });

  it('forgets a row written by this process, and every row of a revoked grant in any model', () => {
    const cache = createRowCache();
    cache.set('ClientCredentials', 't1', row('t1'), 1);
    cache.written('ClientCredentials', 't1');
    expect(cache.get('ClientCredentials', 't1', 1)).toBeUndefined();

    cache.set('Grant', 'g1', row('g1'), 1);
    cache.set('AccessToken', 'a1', row('a1', 'g1'), 1);
    cache.set('RefreshToken', 'r1', row('r1', 'g1'), 1);
    cache.set('RefreshToken', 'r2', row('r2', 'g2'), 1);
    cache.grantRevoked('g1');
    expect([cache.get('Grant', 'g1', 1), cache.get('AccessToken', 'a1', 1), cache.get('RefreshToken', 'r1', 1)]).toEqual([undefined, undefined, undefined]);
    expect(cache.get('RefreshToken', 'r2', 1)).toBeDefined();
  });

  it(`holds ${MAX_ROWS} rows at most: the largest model gives up the row it cached longest ago`, () => {
    const cache = createRowCache();
    cache.set('Grant', 'g1', row('g1'), 1);
    for (let i = 0; i < MAX_ROWS + 10; i += 1) cache.set('AccessToken', `a${i}`, null, 1);
    // The flood of token lookups pushed out its own oldest rows, not the one grant.
    expect(cache.get('Grant', 'g1', 1)).toBeDefined();
    expect(cache.get('AccessToken', 'a10', 1)).toBeUndefined();
    expect(cache.get('AccessToken', 'a11', 1)).toBeNull();
    expect(cache.get('AccessToken', `a${MAX_ROWS + 9}`, 1)).toBeNull();
    // A row set again is one row, not two: nothing more is pushed out for it.
    cache.set('AccessToken', `a${MAX_ROWS + 9}`, null, 1);
    expect(cache.get('AccessToken', 'a11', 1)).toBeNull();
    // A new grant now pushes out the oldest token lookup, not the other grant.
    cache.set('Grant', 'g2', row('g2'), 1);
    expect(cache.get('Grant', 'g1', 1)).toBeDefined();
    expect(cache.get('AccessToken', 'a11', 1)).toBeUndefined();
  });
});
