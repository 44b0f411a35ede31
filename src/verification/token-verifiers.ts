import { createClientIp } from '../http/client-ip.ts';
import { createCredentialCache, type CredentialCache } from './cache.ts';
import { discoverAuthServer } from './discovery.ts';
import { createIntrospectionVerifier } from './introspection.ts';
import { createJwtVerifier } from './jwt.ts';
import type { CredentialVerifier } from './types.ts';

export interface TokenVerifierOptions {
  /** Where the Latchkey authorization server answers, e.g. http://localhost:3000. */
  authServerUrl: string;
  /** This service's resource identifier: the `aud` of the tokens it accepts. */
  audience: string;
  /** This service's client (registered with `resource_server: true`); without it only JWT access tokens are accepted. */
  introspection?: { clientId: string; clientSecret: string };
  /** Proxies whose X-Forwarded-For is believed, for API keys' IP allowlists (addresses or CIDRs). */
  trustedProxies?: readonly string[];
  /** Trust an opaque token's or API key's introspection at most this long (the revocation delay). Default 30. */
  cacheSeconds?: number;
  cache?: CredentialCache;
  now?: () => number;
}

/**
 * The verifiers for every credential Latchkey issues: JWT access tokens (locally) first, then
 * opaque tokens and API keys (by introspection, which needs `introspection`).
 */
export function createTokenVerifiers(options: TokenVerifierOptions): CredentialVerifier[] {
  const metadata = discoverAuthServer(options.authServerUrl);
  const cache = options.cache ?? createCredentialCache();
  const common = { metadata, audience: options.audience, cache, now: options.now };
  const verifiers = [createJwtVerifier(common)];
  if (options.introspection) {
    verifiers.push(createIntrospectionVerifier({
      ...common,
      ...options.introspection,
      clientIp: createClientIp(options.trustedProxies ?? []),
      maxCacheSeconds: options.cacheSeconds ?? 30,
    }));
  }
  return verifiers;
}
