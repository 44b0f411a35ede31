import { createHash } from 'node:crypto';
import type { AuthContext } from './types.ts';

export type CacheLookup =
  | { state: 'valid'; auth: AuthContext }
  /** Verified before and past its expiry now: the caller can say "expired" instead of "invalid". */
  | { state: 'expired' }
  | { state: 'miss' };

/**
 * Credentials already verified, so the hot path skips signatures and network round trips.
 * Bounded (least recently used entries go first) and never trusted past the credential's expiry.
 * Keys are SHA-256 digests, so the cache holds no usable credential.
 */
export interface CredentialCache {
  get(credential: string, nowMs: number): CacheLookup;
  /** Trust `auth` until `trustUntilMs`, and never past `auth.expiresAt`. */
  set(credential: string, auth: AuthContext, trustUntilMs: number): void;
  delete(credential: string): void;
  readonly size: number;
}

interface Entry {
  auth: AuthContext;
  trustUntil: number;
  expiresAt: number;
}

const keyOf = (credential: string) => createHash('sha256').update(credential).digest('base64url');

export function createCredentialCache(options: { maxEntries?: number } = {}): CredentialCache {
  const maxEntries = options.maxEntries ?? 10_000;
  const entries = new Map<string, Entry>();

  return {
    get(credential, nowMs) {
      const key = keyOf(credential);
      const entry = entries.get(key);
      if (!entry) return { state: 'miss' };
      if (nowMs >= entry.expiresAt) return { state: 'expired' };
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
    get size() {
      return entries.size;
    },
  };
}
