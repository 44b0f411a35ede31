import type { IncomingMessage } from 'node:http';
import type { Context } from 'koa';
import { ApiError } from '../errors.ts';
import { cidrMatcher, createClientIp } from '../http/client-ip.ts';
import { createCredentialCache, type CredentialCache } from '../verification/cache.ts';
import { singleFlight } from '../verification/single-flight.ts';
import type { AuthContext, CredentialVerifier } from '../verification/types.ts';
import { hashApiKey, KEY_PREFIX_SHAPE, parseApiKey } from './format.ts';
import { invalidApiKey, MISTYPED_API_KEY, outsideAllowlist } from './errors.ts';
import { secretEndsAt, type ApiKeyStore, type SecretMatch } from './store.ts';
import type { UsageRecorder } from './usage.ts';

export interface ApiKeyVerifierOptions {
  store: ApiKeyStore;
  usage: UsageRecorder;
  /** What an sk_ key without scopes may do: its owner's full access. */
  fullAccessScopes: readonly string[];
  /** Trust a key read from the database at most this long, so a revocation takes effect within it. */
  cacheSeconds: number;
  /** The caller's address; see http/client-ip.ts for trusted proxies. Default: the socket's peer. */
  clientIp?: (req: IncomingMessage) => string;
  cache?: CredentialCache<VerifiedKey>;
  now?: () => number;
}

export interface ApiKeyVerifier extends CredentialVerifier {
  /** Stops trusting a key in this process at once (after a revoke or roll here). */
  forget(keyId: string): void;
}

/** A key as the verifier keeps it between requests. */
export interface VerifiedKey {
  auth: AuthContext;
  expiresAt: Date | null;
  /** Why `expiresAt` ends it: the key's own expiry, or the end of a rolled secret's grace period. */
  ending: 'key' | 'rolled';
  allowsIp: ((ip: string) => boolean) | null;
}

function expiredError(key: VerifiedKey): ApiError {
  const at = key.expiresAt!.toISOString();
  return new ApiError('api_key_expired', key.ending === 'rolled'
    ? `This API key was rolled and its previous secret stopped working at ${at}; use the new secret.`
    : `The API key expired at ${at}; create a new one.`);
}

function toVerifiedKey(match: SecretMatch, fullAccessScopes: readonly string[]): VerifiedKey {
  const { key, secretExpiresAt } = match;
  const endsAt = secretEndsAt(match);
  const expiresAt = endsAt === null ? null : new Date(endsAt);
  return {
    auth: {
      method: 'api_key',
      userId: key.userId,
      clientId: null,
      scopes: key.scopes ?? fullAccessScopes,
      expiresAt,
      environment: key.environment,
      keyId: key.id,
      restricted: key.restricted,
      ...(key.ipAllowlist?.length ? { ipAllowlist: key.ipAllowlist } : {}),
    },
    expiresAt,
    ending: secretExpiresAt !== null && endsAt === secretExpiresAt ? 'rolled' : 'key',
    allowsIp: key.ipAllowlist?.length ? cidrMatcher(key.ipAllowlist) : null,
  };
}

/**
 * Verifies sk_ and rk_ keys against the database. A mistyped key fails its checksum before any
 * lookup; a known one is served from memory for `cacheSeconds`; expiry and the IP allowlist are
 * checked on every request. Usage is recorded in memory and written in batches.
 */
export function createApiKeyVerifier(options: ApiKeyVerifierOptions): ApiKeyVerifier {
  const now = options.now ?? Date.now;
  const cache = options.cache ?? createCredentialCache<VerifiedKey>();
  const clientIp = options.clientIp ?? createClientIp([]);
  // Bumped by forget(): a read that started before a revoke here must not cache what it read.
  let forgotten = 0;

  // Concurrent requests with the same key share one lookup.
  const load = singleFlight(async (secret: string): Promise<VerifiedKey | undefined> => {
    const generation = forgotten;
    const match = await options.store.findBySecretHash(hashApiKey(secret));
    if (!match || match.key.revokedAt !== null) return undefined;
    const verified = toVerifiedKey(match, options.fullAccessScopes);
    if (generation === forgotten) cache.set(secret, verified, now() + options.cacheSeconds * 1000);
    return verified;
  });

  /** Checked on every request, cached or not: expiry and the IP allowlist; then the use is counted. */
  const admit = (key: VerifiedKey, ctx: Context, at: number): AuthContext => {
    const ip = clientIp(ctx.req);
    if (key.expiresAt && at >= key.expiresAt.getTime()) {
      options.usage.event(key.auth.keyId!, 'rejected_expired', ip, { path: ctx.path }, at);
      throw expiredError(key);
    }
    if (key.allowsIp && !key.allowsIp(ip)) {
      options.usage.event(key.auth.keyId!, 'rejected_ip', ip, { path: ctx.path }, at);
      throw outsideAllowlist(ip);
    }
    options.usage.used(key.auth.keyId!, ip, at);
    return key.auth;
  };

  return {
    claims: (credential) => KEY_PREFIX_SHAPE.test(credential),

    verify(credential, ctx) {
      // A mistyped key is refused first, on its checksum alone: no hashing, no lookup. Refused
      // with a rejected promise, not a throw: V8 records where each throw happened (a walk of
      // the stack) and then unwinds the frames to the catch, ~2 µs a refusal here (a CPU
      // profile), when accepting a cached key takes ~25 µs in all.
      if (!parseApiKey(credential)) return Promise.reject(MISTYPED_API_KEY);
      const at = now();
      const cached = cache.get(credential, at);
      // Known (an expired key too: admit says so): answered without a promise.
      if (cached.state !== 'miss') return admit(cached.auth, ctx, at);
      return load(credential).then((key) => {
        if (!key) throw invalidApiKey('it is unknown or has been revoked');
        return admit(key, ctx, at);
      });
    },

    forget(keyId) {
      forgotten += 1;
      cache.evict((key) => key.auth.keyId === keyId);
    },

    refused(auth, requiredScopes, ctx) {
      if (auth.method !== 'api_key' || !auth.keyId) return;
      options.usage.event(auth.keyId, 'rejected_scope', clientIp(ctx.req), { path: ctx.path, required_scopes: [...requiredScopes] }, now());
    },
  };
}
