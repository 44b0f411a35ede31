import type { Context, Middleware, Next } from 'koa';
import { ApiError } from '../errors.ts';
import type { AuthContext, CredentialVerifier, MaybePromise } from './types.ts';

/** What `requireAuth` adds to `ctx.state`: write `new Router<AuthState>()` to have it typed. */
export interface AuthState {
  auth: AuthContext;
}

/** Scopes that allow everything, whatever a route asks for. */
export const SUPER_SCOPES: readonly string[] = ['admin', 'admin:all'];

/** Whether `granted` satisfies a route that accepts any one of `anyOf` (an empty list: any credential). */
export function hasScope(granted: readonly string[], anyOf: readonly string[]): boolean {
  if (anyOf.length === 0) return true;
  return granted.some((scope) => SUPER_SCOPES.includes(scope) || anyOf.includes(scope));
}

export interface RequireAuthOptions {
  /** Tried in order; the first whose `claims()` recognises the credential decides. */
  verifiers: readonly CredentialVerifier[];
  /** Any one of these scopes is enough (as are `admin` and `admin:all`); omit to accept any valid credential. */
  scopes?: readonly string[];
}

// RFC 6750 b64token; anything else cannot be a credential Latchkey issued.
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

/** The bearer credential in the Authorization header, or an ApiError saying what is wrong. */
export function bearerCredential(ctx: Context): string {
  // A token in the URL ends up in logs, proxies and browser history: refuse it outright.
  if (ctx.querystring && ctx.query.access_token !== undefined) {
    throw new ApiError('invalid_request', 'Access tokens are not accepted in the query string (access_token); send them in the Authorization header: "Authorization: Bearer <token>".');
  }
  const header = ctx.get('authorization');
  if (!header) throw new ApiError('missing_api_key', 'No credentials were sent in the Authorization header; send "Authorization: Bearer <token or API key>".');
  if (!/^bearer(\s|$)/i.test(header)) {
    throw new ApiError('missing_api_key', 'The Authorization header does not use the Bearer scheme; send "Authorization: Bearer <token or API key>".');
  }
  const match = BEARER.exec(header);
  if (!match) throw new ApiError('invalid_token', 'The bearer credential in the Authorization header is empty or malformed.');
  return match[1]!;
}

/** Sets `ctx.state.auth` (so a refusal for scope is still logged with who was refused), then checks the scope. */
function admit(ctx: Context, verifier: CredentialVerifier, auth: AuthContext, scopes: readonly string[]): AuthContext {
  ctx.state.auth = auth;
  if (!hasScope(auth.scopes, scopes)) {
    verifier.refused?.(auth, scopes, ctx);
    throw new ApiError(
      'insufficient_scope',
      `This request needs the ${scopes.map((s) => `"${s}"`).join(' or ')} scope; the credential has ${auth.scopes.length ? auth.scopes.join(', ') : 'no scopes'}.`,
      scopes,
    );
  }
  return auth;
}

/**
 * Verifies the request's bearer credential with the first verifier that recognises it, sets
 * `ctx.state.auth` and checks that it carries one of `scopes` (none: any valid credential).
 * Throws an ApiError otherwise. A credential verified from memory is answered without a promise.
 */
export function authenticate(ctx: Context, verifiers: readonly CredentialVerifier[], scopes: readonly string[] = []): MaybePromise<AuthContext> {
  const credential = bearerCredential(ctx);
  const verifier = verifiers.find((v) => v.claims(credential));
  if (!verifier) throw new ApiError('invalid_token', 'The bearer credential is not a token or API key this service recognises.');
  const verified = verifier.verify(credential, ctx);
  return verified instanceof Promise ? verified.then((auth) => admit(ctx, verifier, auth, scopes)) : admit(ctx, verifier, verified, scopes);
}

/**
 * Koa middleware: `authenticate`s the request (setting `ctx.state.auth`) and calls the next
 * middleware. Failures are thrown as ApiErrors; mount `errorResponder()` in front to render them
 * in Latchkey's error format.
 */
export function requireAuth(options: RequireAuthOptions): Middleware<AuthState> {
  const scopes = options.scopes ?? [];
  return async (ctx: Context, next: Next) => {
    await authenticate(ctx, options.verifiers, scopes);
    await next();
  };
}
