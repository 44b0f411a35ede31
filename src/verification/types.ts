import type { Context } from 'koa';

/** Who is calling and what they may do, whatever credential they presented. */
export interface AuthContext {
  /** How the caller authenticated, as the guide's /v1/auth/verify reports it. */
  method: 'oauth' | 'jwt' | 'api_key';
  /** The user the credential acts for; null for a client-credentials token. */
  userId: string | null;
  /** The OAuth client the token was issued to; null for API keys. */
  clientId: string | null;
  scopes: readonly string[];
  /** When the credential stops working; null when it never expires (an API key without expiry). */
  expiresAt: Date | null;
  /** API keys only: sandbox (test) or production (live) data. OAuth/JWT tokens act on live data. */
  environment?: 'test' | 'live';
  /** API keys only: the key's id (never its secret). */
  keyId?: string;
  /** API keys only: a restricted (rk_) key, limited to the scopes it lists. */
  restricted?: boolean;
  /** API keys only: the CIDRs it may be used from; absent: anywhere. */
  ipAllowlist?: readonly string[];
}

/** A value now, or a promise of it later. */
export type MaybePromise<T> = T | Promise<T>;

/**
 * One kind of bearer credential. `authenticate` asks each verifier in turn whether the credential
 * looks like its kind (cheaply, without I/O) and lets the first that claims it decide.
 */
export interface CredentialVerifier {
  claims(credential: string): boolean;
  /**
   * Who is calling, or an ApiError (invalid_token, token_expired, invalid_api_key, ...) thrown or
   * rejected. What is answered from memory comes back as a value, not a promise: on Node 20 every
   * promise costs extra once any AsyncLocalStorage is in use, and oidc-provider uses one.
   */
  verify(credential: string, ctx: Context): MaybePromise<AuthContext>;
  /** Told when a verified credential lacked the scope a route needs (API keys log it for their owner). */
  refused?(auth: AuthContext, requiredScopes: readonly string[], ctx: Context): void;
}
