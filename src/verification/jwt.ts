import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { ApiError } from '../errors.ts';
import type { CredentialCache } from './cache.ts';
import { unreachable, type MetadataSource } from './discovery.ts';
import type { AuthContext, CredentialVerifier } from './types.ts';

/** Asymmetric algorithms only: never `none`, never HMAC (which a public key must not be used for). */
export const ALLOWED_JWT_ALGORITHMS = ['ES256', 'ES384', 'RS256', 'PS256', 'EdDSA'] as const;

export interface JwtVerifierOptions {
  metadata: MetadataSource;
  /** The `aud` this service accepts: its resource identifier. */
  audience: string;
  algorithms?: readonly string[];
  /** Leeway for `exp` and `nbf` when clocks disagree a little. */
  clockToleranceSeconds?: number;
  /** An unknown `kid` refetches the JWKS at most once per this many seconds. */
  jwksCooldownSeconds?: number;
  cache?: CredentialCache;
  now?: () => number;
}

/**
 * Three dot-separated parts, the first a JSON object ('eyJ' is base64url for '{"'). The bearer
 * header's syntax is checked already and jose checks the rest; a second regex over a token of
 * several hundred characters cost 2% of a cached verification.
 */
const looksLikeJwt = (credential: string) => {
  const first = credential.indexOf('.');
  const second = credential.indexOf('.', first + 1);
  return credential.startsWith('eyJ') && first > 0 && second > first && credential.indexOf('.', second + 1) === -1;
};

const invalid = (why: string) => new ApiError('invalid_token', `The access token is invalid: ${why}.`);

function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof joseErrors.JWTExpired) return new ApiError('token_expired', 'The access token has expired.');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    const claim = err.claim === 'aud' ? 'it was issued for another audience'
      : err.claim === 'iss' ? 'it was issued by another authorization server'
      : err.claim === 'nbf' ? 'it is not valid yet'
      : err.claim === 'typ' ? 'it is not an access token (typ must be at+jwt)'
      : `its ${err.claim} claim is missing or wrong`;
    return invalid(claim);
  }
  if (err instanceof joseErrors.JWKSNoMatchingKey) return invalid('it was signed with a key the authorization server does not publish');
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return invalid('its signing algorithm is not accepted');
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return invalid('its signature does not verify');
  if (err instanceof joseErrors.JWKSTimeout) return unreachable();
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid || err instanceof joseErrors.JOSENotSupported) {
    return invalid('it is malformed');
  }
  // Anything else (the JWKS could not be fetched or parsed) is our problem, not the caller's.
  return Object.assign(unreachable(), { cause: err });
}

/** The AuthContext a verified RFC 9068 access token describes. */
export function authFromJwt(payload: JWTPayload & { client_id?: unknown; scope?: unknown }, method: AuthContext['method']): AuthContext {
  const clientId = String(payload.client_id);
  return {
    method,
    // RFC 9068: a token without a resource owner (client credentials) names its client as `sub`.
    userId: payload.sub === clientId ? null : (payload.sub ?? null),
    clientId,
    scopes: typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : [],
    expiresAt: payload.exp ? new Date(payload.exp * 1000) : null,
    environment: 'live',
  };
}

/**
 * Verifies JWT access tokens (RFC 9068, `typ: at+jwt`) locally against the authorization
 * server's published keys: no round trip per request once the JWKS is cached.
 */
export function createJwtVerifier(options: JwtVerifierOptions): CredentialVerifier {
  const now = options.now ?? Date.now;
  const algorithms = [...(options.algorithms ?? ALLOWED_JWT_ALGORITHMS)];
  const clockTolerance = options.clockToleranceSeconds ?? 5;
  let keys: { issuer: string; jwks: ReturnType<typeof createRemoteJWKSet> } | undefined;

  const keySet = async () => {
    if (!keys) {
      const { issuer, jwks_uri } = await options.metadata();
      keys = { issuer, jwks: createRemoteJWKSet(new URL(jwks_uri), { cooldownDuration: (options.jwksCooldownSeconds ?? 5) * 1000 }) };
    }
    return keys;
  };

  const verifySignature = async (credential: string): Promise<AuthContext> => {
    try {
      const { issuer, jwks } = await keySet();
      const { payload } = await jwtVerify(credential, jwks, {
        issuer,
        audience: options.audience,
        algorithms,
        typ: 'at+jwt',
        clockTolerance,
        currentDate: new Date(now()),
        requiredClaims: ['exp', 'iat', 'sub', 'client_id', 'jti'],
      });
      // A sender-constrained token (DPoP, mTLS) is only valid with a proof this service does not check.
      if (payload.cnf !== undefined) throw invalid('it is bound to a proof of possession this API does not accept');
      const auth = authFromJwt(payload, 'jwt');
      // A JWT cannot be revoked, so it may be trusted until it expires.
      options.cache?.set(credential, auth, auth.expiresAt?.getTime() ?? 0);
      return auth;
    } catch (err) {
      throw toApiError(err);
    }
  };

  return {
    claims: looksLikeJwt,

    verify(credential) {
      const cached = options.cache?.get(credential, now());
      if (cached?.state === 'valid') return cached.auth;
      if (cached?.state === 'expired') throw new ApiError('token_expired', 'The access token has expired.');
      return verifySignature(credential);
    },
  };
}
