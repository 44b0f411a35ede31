import { describe, expect, it } from 'vitest';
import { createCredentialCache } from '../src/verification/cache.ts';

const auth = (name: string, expiresAt: Date | null = null) => ({ name, expiresAt });
const now = Date.now();
const later = now + 60_000;

describe('the credential cache', () => {
  it('evicts an entry that was not used before one that was', () => {
    const cache = createCredentialCache<ReturnType<typeof auth>>({ maxEntries: 3 });
    for (const name of ['a', 'b', 'c']) cache.set(name, auth(name), later);
    expect(cache.get('a', now).state).toBe('valid');
    cache.set('d', auth('d'), later);
    expect(cache.size).toBe(3);
    expect(cache.get('b', now).state).toBe('miss');
    for (const name of ['a', 'c', 'd']) expect(cache.get(name, now)).toEqual({ state: 'valid', auth: auth(name) });
  });

  it('keeps the entry it stores even when every other one was used', () => {
    const cache = createCredentialCache<ReturnType<typeof auth>>({ maxEntries: 2 });
    cache.set('a', auth('a'), later);
    cache.set('b', auth('b'), later);
    cache.get('a', now);
    cache.get('b', now);
    cache.set('c', auth('c'), later);
    expect(cache.size).toBe(2);
    expect(cache.get('c', now).state).toBe('valid');
    // Both had their second chance; the oldest of them went.
    expect(cache.get('a', now).state).toBe('miss');
    expect(cache.get('b', now).state).toBe('valid');
  });

  it('trusts an entry no longer than it was told to, and says when the credential itself expired', () => {
    const cache = createCredentialCache<ReturnType<typeof auth>>();
    cache.set('short', auth('short'), now + 10);
    expect(cache.get('short', now).state).toBe('valid');
    expect(cache.get('short', now + 10).state).toBe('miss');
    expect(cache.get('short', now).state).toBe('miss');
    cache.set('expiring', auth('expiring', new Date(now + 5)), later);
    expect(cache.get('expiring', now + 5)).toEqual({ state: 'expired', auth: auth('expiring', new Date(now + 5)) });
  });
});
