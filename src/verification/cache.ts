import { hash } from 'node:crypto';
import type { AuthContext } from './types.ts';

export type CacheLookup<T = AuthContext> =
  | { state: 'valid'; auth: T }
  /** Verified before and past its expiry now: the caller can say "expired" instead of "invalid". */
  | { state: 'expired'; auth: T }
  | { state: 'miss' };

/** What a cache can hold: anything that knows when it stops being valid. */
interface Expiring {
  expiresAt: Date | null;
}

/**
 * Credentials already verified, so the hot path skips signatures and network round trips.
 * Bounded (least recently used entries go first) and never trusted past the credential's expiry.
 * Keys are SHA-256 digests, so the cache holds no usable credential.
 */
export interface CredentialCache<T extends Expiring = AuthContext> {
  get(credential: string, nowMs: number): CacheLookup<T>;
  /** Trust `auth` until `trustUntilMs`, and never past `auth.expiresAt`. */
  set(credential: string, auth: T, trustUntilMs: number): void;
  delete(credential: string): void;
  /** Drops every entry `matches` picks (e.g. all secrets of a revoked API key). */
  evict(matches: (auth: T) => boolean): void;
  readonly size: number;
}

interface Entry<T> {
  auth: T;
  trustUntil: number;
  expiresAt: number;
}

// One-shot hashing: no Hash object per lookup on the hot path.
const keyOf = (credential: string) => hash('sha256', credential, 'base64url');

export function createCredentialCache<T extends Expiring = AuthContext>(options: { maxEntries?: number } = {}): CredentialCache<T> {
  const maxEntries = options.maxEntries ?? 10_000;
  const entries = new Map<string, Entry<T>>();

  return {
    get(credential, nowMs) {
      const key = keyOf(credential);
      const entry = entries.get(key);
      if (!entry) return { state: 'miss' };
      if (nowMs >= entry.expiresAt) return { state: 'expired', auth: entry.auth };
      if (nowMs >= entry.trustUntil) {
        entries.delete(key);
        return { state: 'miss' };
      }
      // Move to the back of the Map: the Map's insertion order is our recency order.
      entries.delete(key);
      entries.set(key, entry);
      return { state: 'valid', auth: entry.auth };
    },
    set(credential, auth, trustUntilMs) {
      const expiresAt = auth.expiresAt ? auth.expiresAt.getTime() : Number.POSITIVE_INFINITY;
      const key = keyOf(credential);
      entries.delete(key);
      entries.set(key, { auth, trustUntil: Math.min(trustUntilMs, expiresAt), expiresAt });
      while (entries.size > maxEntries) entries.delete(entries.keys().next().value!);
    },
    delete(credential) {
      entries.delete(keyOf(credential));
    },
    evict(matches) {
      for (const [key, entry] of entries) if (matches(entry.auth)) entries.delete(key);
    },
    get size() {
      return entries.size;
    },
  };
}
