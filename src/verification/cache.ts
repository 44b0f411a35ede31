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
 * Bounded (entries not used since they last came up for eviction go first: "second chance", an
 * approximation of least recently used) and never trusted past the credential's expiry.
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
  /** Used since it was stored or last came up for eviction. */
  used: boolean;
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
      // A hit only marks the entry. Moving it to the back of the Map (delete, then set) on every
      // hit made V8 rebuild the Map's table, and those tables were promoted to the old generation:
      // ~3 MB/s of it at 16,000 hits a second, and a full collection every 2-3 s.
      entry.used = true;
      return { state: 'valid', auth: entry.auth };
    },
    set(credential, auth, trustUntilMs) {
      const expiresAt = auth.expiresAt ? auth.expiresAt.getTime() : Number.POSITIVE_INFINITY;
      const key = keyOf(credential);
      entries.delete(key);
      entries.set(key, { auth, trustUntil: Math.min(trustUntilMs, expiresAt), expiresAt, used: false });
      // The Map's insertion order is the eviction order: an entry used since it was stored (or
      // since it last came up) goes to the back once, unmarked; one that was not goes. The entry
      // being stored is not a candidate.
      for (const [oldest, entry] of entries) {
        if (entries.size <= maxEntries) break;
        if (oldest === key) continue;
        entries.delete(oldest);
        if (entry.used) {
          entry.used = false;
          entries.set(oldest, entry);
        }
      }
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
