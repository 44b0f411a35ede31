import type { Next } from 'koa';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { isResourceServer, routes } from '../oidc/provider.ts';
import { hashApiKey, parseApiKey } from './format.ts';
import { secretEndsAt, type ApiKeyStore } from './store.ts';

/**
 * Lets RFC 7662 introspection answer for API keys too. oidc-provider authenticates the client and
 * answers for its own tokens; when it found nothing and the token is one of our keys, a client
 * registered as a resource server gets the key's description. Anyone else keeps `{"active": false}`.
 */
export function apiKeyIntrospection(store: ApiKeyStore, options: { fullAccessScopes: readonly string[]; now?: () => number }) {
  const now = options.now ?? Date.now;
  return async (ctx: KoaContextWithOIDC, next: Next): Promise<void> => {
    // Every other request passes straight through, without waiting on it here.
    if (ctx.method !== 'POST' || ctx.path !== routes.introspection) return next();
    await next();
    if (ctx.status !== 200) return;
    if ((ctx.body as { active?: boolean } | undefined)?.active !== false) return;
    const token = ctx.oidc.params?.token;
    if (typeof token !== 'string' || !parseApiKey(token)) return;
    if (!isResourceServer(ctx.oidc.client)) return;

    const match = await store.findBySecretHash(hashApiKey(token));
    if (!match || match.key.revokedAt !== null) return;
    const { key } = match;
    const expiresAt = secretEndsAt(match);
    if (expiresAt !== null && expiresAt <= now()) return;
    ctx.body = {
      active: true,
      token_type: 'api_key',
      scope: (key.scopes ?? options.fullAccessScopes).join(' '),
      sub: key.userId,
      environment: key.environment,
      restricted: key.restricted,
      key_id: key.id,
      // The resource server enforces the allowlist: only it sees the caller's address.
      ip_allowlist: key.ipAllowlist ?? undefined,
      iat: Math.floor(key.createdAt / 1000),
      exp: expiresAt === null ? undefined : Math.floor(expiresAt / 1000),
      iss: ctx.oidc.provider.issuer,
    };
  };
}
