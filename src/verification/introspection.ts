import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import { invalidApiKey, MISTYPED_API_KEY, outsideAllowlist } from '../api-keys/errors.ts';
import { KEY_PREFIX_SHAPE, parseApiKey } from '../api-keys/format.ts';
import { ApiError } from '../errors.ts';
import { cidrMatcher, createClientIp } from '../http/client-ip.ts';
import type { CredentialCache } from './cache.ts';
import { unreachable, type MetadataSource } from './discovery.ts';
import { singleFlight } from './single-flight.ts';
import type { AuthContext, CredentialVerifier } from './types.ts';

export interface IntrospectionVerifierOptions {
  metadata: MetadataSource;
  /** This service's own client at the authorization server, registered with `resource_server: true`. */
  clientId: string;
  clientSecret: string;
  /** The `aud` this service accepts: its resource identifier. */
  audience: string;
  /** Trust an introspection answer at most this long, so a revocation takes effect within it. */
  maxCacheSeconds: number;
  cache?: CredentialCache;
  /** The caller's address, for API keys' IP allowlists. Default: the socket's peer. */
  clientIp?: (req: IncomingMessage) => string;
  clockToleranceSeconds?: number;
  now?: () => number;
  fetch?: typeof fetch;
}

// RFC 7662 section 2.2; `active` is the only member every answer has.
const introspectionSchema = z.object({
  active: z.boolean(),
  client_id: z.string().optional(),
  sub: z.string().optional(),
  scope: z.string().optional(),
  exp: z.number().optional(),
  iss: z.string().optional(),
  aud: z.union([z.string(), z.array(z.string())]).optional(),
  token_type: z.string().optional(),
  cnf: z.unknown().optional(),
  // Latchkey's members for API keys (token_type "api_key").
  environment: z.enum(['test', 'live']).optional(),
  key_id: z.string().optional(),
  restricted: z.boolean().optional(),
  ip_allowlist: z.array(z.string()).optional(),
});

type Answer = z.infer<typeof introspectionSchema>;

// Opaque tokens are URL-safe strings without dots; anything with dots is a JWT or junk.
const OPAQUE_SHAPE = /^[A-Za-z0-9_~+/-]{16,512}=*$/;

const revoked = () => new ApiError('invalid_token', 'The access token is invalid, has been revoked, or was not issued by this authorization server.');
const expired = () => new ApiError('token_expired', 'The access token has expired.');

/** An API key as introspection describes it; its IP allowlist travels with it and is checked per request. */
function apiKeyAuth(answer: Answer): AuthContext {
  if (!answer.sub || !answer.environment || !answer.key_id) throw Object.assign(unreachable(), { cause: new Error('API key introspection answer without sub, environment or key_id') });
  return {
    method: 'api_key',
    userId: answer.sub,
    clientId: null,
    scopes: answer.scope?.split(' ').filter(Boolean) ?? [],
    expiresAt: answer.exp === undefined ? null : new Date(answer.exp * 1000),
    environment: answer.environment,
    keyId: answer.key_id,
    restricted: answer.restricted ?? false,
    ...(answer.ip_allowlist?.length ? { ipAllowlist: answer.ip_allowlist } : {}),
  };
}

/**
 * Verifies opaque access tokens (and Latchkey API keys) by asking the authorization server (RFC 7662 introspection).
 * Answers are cached until the token expires but never longer than `maxCacheSeconds`, and
 * concurrent requests with the same token share one round trip.
 */
export function createIntrospectionVerifier(options: IntrospectionVerifierOptions): CredentialVerifier {
  const now = options.now ?? Date.now;
  const fetchImpl = options.fetch ?? fetch;
  const tolerance = (options.clockToleranceSeconds ?? 5) * 1000;
  // RFC 6749 section 2.3.1: the client id and secret are form-encoded before Basic encoding.
  const basic = `Basic ${Buffer.from(`${encodeURIComponent(options.clientId)}:${encodeURIComponent(options.clientSecret)}`).toString('base64')}`;

  // Concurrent requests with the same token share one round trip.
  const introspect = singleFlight(async (token: string): Promise<AuthContext> => {
    const { introspection_endpoint: endpoint, issuer } = await options.metadata();
    if (!endpoint) throw Object.assign(unreachable(), { cause: new Error('the authorization server publishes no introspection endpoint') });
    let res: Response;
    try {
      res = await fetchImpl(endpoint, {
        method: 'POST',
        headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
        signal: AbortSignal.timeout(5000),
      });
    } catch (err) {
      throw Object.assign(unreachable(), { cause: err });
    }
    if (!res.ok) {
      // 401 here means this API's own client credentials are wrong: an operator's problem.
      const hint = res.status === 401 ? ': the API\'s introspection client id or secret was rejected' : '';
      throw Object.assign(unreachable(), { cause: new Error(`introspection answered ${res.status}${hint}`) });
    }
    const parsed = introspectionSchema.safeParse(await res.json().catch(() => undefined));
    if (!parsed.success) throw Object.assign(unreachable(), { cause: parsed.error });
    const answer = parsed.data;
    const isKey = KEY_PREFIX_SHAPE.test(token);
    if (!answer.active) throw isKey ? invalidApiKey('it is unknown, expired or has been revoked') : revoked();
    if (isKey && answer.token_type === 'api_key') {
      const auth = apiKeyAuth(answer);
      options.cache?.set(token, auth, now() + options.maxCacheSeconds * 1000);
      return auth;
    }
    // Refresh tokens introspect as active too, without a token_type: they are not bearer credentials.
    if (answer.token_type?.toLowerCase() !== 'bearer') throw new ApiError('invalid_token', 'The token is not an access token.');
    if (answer.cnf !== undefined) throw new ApiError('invalid_token', 'The access token is bound to a proof of possession this API does not accept.');
    if (answer.iss !== undefined && answer.iss !== issuer) throw new ApiError('invalid_token', 'The access token was issued by another authorization server.');
    const audiences = answer.aud === undefined ? [] : [answer.aud].flat();
    if (!audiences.includes(options.audience)) throw new ApiError('invalid_token', 'The access token was issued for another audience.');
    if (!answer.client_id) throw Object.assign(unreachable(), { cause: new Error('introspection answer without client_id') });

    const auth: AuthContext = {
      method: 'oauth',
      userId: answer.sub ?? null,
      clientId: answer.client_id,
      scopes: answer.scope?.split(' ').filter(Boolean) ?? [],
      expiresAt: answer.exp === undefined ? null : new Date(answer.exp * 1000),
      environment: 'live',
    };
    // Clocks disagree: the authorization server still says active, but by ours it expired.
    if (auth.expiresAt && auth.expiresAt.getTime() + tolerance <= now()) throw expired();
    options.cache?.set(token, auth, now() + options.maxCacheSeconds * 1000);
    return auth;
  });

  const clientIp = options.clientIp ?? createClientIp([]);
  const matchers = new WeakMap<readonly string[], (ip: string) => boolean>();
  /** API keys only: the allowlist is checked on every request, cached or not. */
  const checkAddress = (auth: AuthContext, req: IncomingMessage) => {
    if (!auth.ipAllowlist) return auth;
    let allows = matchers.get(auth.ipAllowlist);
    if (!allows) matchers.set(auth.ipAllowlist, (allows = cidrMatcher(auth.ipAllowlist)));
    const ip = clientIp(req);
    if (!allows(ip)) throw outsideAllowlist(ip);
    return auth;
  };

  return {
    claims: (credential) => OPAQUE_SHAPE.test(credential),

    verify(credential, ctx) {
      // A mistyped key is refused here, without a round trip, and without a throw (see the API
      // key verifier).
      if (KEY_PREFIX_SHAPE.test(credential) && !parseApiKey(credential)) return Promise.reject(MISTYPED_API_KEY);
      const cached = options.cache?.get(credential, now());
      if (cached?.state === 'valid') return checkAddress(cached.auth, ctx.req);
      if (cached?.state === 'expired') throw cached.auth.method === 'api_key' ? new ApiError('api_key_expired', 'The API key has expired.') : expired();
      return introspect(credential).then((auth) => checkAddress(auth, ctx.req));
    },
  };
}
