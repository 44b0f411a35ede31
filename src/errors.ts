import { randomBytes } from 'node:crypto';
import type { Context, Next } from 'koa';
import { createLogger, type Logger } from './logger.ts';

/**
 * The one error vocabulary of Latchkey's JSON APIs (the companion API, key management, login),
 * taken from the guide. Handlers throw an ApiError; `errorResponder` renders every one the same way.
 */
export type ErrorCode =
  | 'invalid_request'
  | 'missing_api_key'
  | 'invalid_token'
  | 'token_expired'
  | 'invalid_api_key'
  | 'api_key_expired'
  | 'invalid_credentials'
  | 'insufficient_scope'
  | 'forbidden'
  | 'not_found'
  | 'method_not_allowed'
  | 'conflict'
  | 'payload_too_large'
  | 'rate_limit_exceeded'
  | 'server_error'
  | 'service_unavailable';

export function statusOf(code: ErrorCode): number {
  switch (code) {
    case 'invalid_request': return 400;
    case 'missing_api_key':
    case 'invalid_token':
    case 'token_expired':
    case 'invalid_api_key':
    case 'api_key_expired':
    case 'invalid_credentials': return 401;
    case 'insufficient_scope':
    case 'forbidden': return 403;
    case 'not_found': return 404;
    case 'method_not_allowed': return 405;
    case 'conflict': return 409;
    case 'payload_too_large': return 413;
    case 'rate_limit_exceeded': return 429;
    case 'server_error': return 500;
    case 'service_unavailable': return 503;
  }
}

export class ApiError extends Error {
  readonly status: number;

  constructor(
    readonly code: ErrorCode,
    message: string,
    /** For insufficient_scope: the scopes that would have been enough (RFC 6750 `scope`). */
    readonly requiredScopes?: readonly string[],
    /** Extra response headers, e.g. Retry-After. */
    readonly headers?: Readonly<Record<string, string>>,
  ) {
    // An ApiError is an answer to a client, not a bug: its stack would never be read, and
    // capturing it is the costliest part of refusing a bad credential.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message);
    Error.stackTraceLimit = limit;
    this.status = statusOf(code);
  }

  #responseHeaders?: readonly (readonly [string, string])[];

  /** Every header this error is answered with; rendered once, as shared errors (MISTYPED_API_KEY) are answered again and again. */
  get responseHeaders(): readonly (readonly [string, string])[] {
    return (this.#responseHeaders ??= headersFor(this));
  }
}

const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

// Request ids must be unique, not unguessable: a random prefix per process and a counter make
// them without a system call per request (randomBytes here cost 6% of a cached verification).
const processPrefix = randomBytes(8).toString('hex');
let sequence = 0;
export const newRequestId = (): string => {
  sequence = (sequence + 1) >>> 0;
  return `req_${processPrefix}${sequence.toString(16).padStart(8, '0')}`;
};

/** A well-formed client X-Request-ID, or a new id; kept in ctx.state for error bodies and logs. */
export function requestIdOf(ctx: Context): string {
  const given = ctx.req.headers['x-request-id'];
  const id = typeof given === 'string' && SAFE_REQUEST_ID.test(given) ? given : newRequestId();
  ctx.state.requestId = id;
  return id;
}

/** Middleware: `requestIdOf`, echoed in the X-Request-ID response header; the id is in every error body and log line. */
export function requestId() {
  return (ctx: Context, next: Next) => {
    ctx.set('X-Request-ID', requestIdOf(ctx));
    return next();
  };
}

/** RFC 6750 error for each bearer-credential failure; missing credentials carry no error code. */
const bearerError: Partial<Record<ErrorCode, 'invalid_token' | 'insufficient_scope' | null>> = {
  missing_api_key: null,
  invalid_token: 'invalid_token',
  token_expired: 'invalid_token',
  invalid_api_key: 'invalid_token',
  api_key_expired: 'invalid_token',
  insufficient_scope: 'insufficient_scope',
  // A valid credential that may not do this here (another environment, an address outside a key's
  // allowlist): RFC 6750's code for "needs more privileges than the credential carries".
  forbidden: 'insufficient_scope',
};

/** Client errors thrown by Koa, routers or body parsers (status 4xx) keep their status and message. */
function fromHttpError(err: unknown): ApiError | undefined {
  const e = err as { status?: unknown; message?: string };
  const codeOf: Record<number, ErrorCode> = { 400: 'invalid_request', 404: 'not_found', 405: 'method_not_allowed', 413: 'payload_too_large' };
  const code = typeof e.status === 'number' ? codeOf[e.status] : undefined;
  return code && new ApiError(code, e.message || code);
}

/** What an error becomes on the wire: status, headers and the guide's error body. */
export interface ErrorAnswer {
  status: number;
  /** Name, value pairs: WWW-Authenticate for credential errors, Cache-Control, and the error's own (Retry-After, Allow). */
  headers: readonly (readonly [string, string])[];
  body: { error: ErrorCode; message: string; code: number; request_id: string; timestamp: string };
}

// Header values must be visible ASCII; a message may quote a path or an address.
const headerSafe = (value: string) => value.replace(/["\\]|[^\x20-\x7e]/g, '');

function headersFor(error: ApiError): [string, string][] {
  const headers: [string, string][] = error.headers ? Object.entries(error.headers) : [];
  if (error.code in bearerError || error.status === 401) {
    const scope = error.requiredScopes?.length ? `, scope="${error.requiredScopes.join(' ')}"` : '';
    const rfc6750 = bearerError[error.code] === undefined ? 'invalid_token' : bearerError[error.code];
    headers.push([
      'WWW-Authenticate',
      rfc6750 ? `Bearer realm="latchkey", error="${rfc6750}", error_description="${headerSafe(error.message)}"${scope}` : 'Bearer realm="latchkey"',
    ]);
  }
  headers.push(['Cache-Control', 'no-store']);
  return headers;
}

const UNEXPECTED_HEADERS: readonly (readonly [string, string])[] = [['Cache-Control', 'no-store']];

// The error body's timestamp, formatted once per millisecond. Refusals can come by the tens of
// thousands a second (a client with a mistyped API key, a scan), and a Date formatted for each
// cost ~0.5 µs.
let stampedAt = Number.NaN;
let stamp = '';
const timestamp = () => {
  const now = Date.now();
  if (now !== stampedAt) {
    stampedAt = now;
    stamp = new Date(now).toISOString();
  }
  return stamp;
};

/** Renders ApiErrors (and anything unexpected: logged, then a bare 500) in the guide's error shape. */
export function errorAnswer(err: unknown, requestId: string, logger: Logger, path: string): ErrorAnswer {
  const apiError = err instanceof ApiError ? err : fromHttpError(err);
  if (!apiError || apiError.status >= 500) {
    const cause = apiError ? (apiError.cause as Error | undefined)?.message : (err as Error).message;
    logger.error(apiError ? apiError.message : 'unhandled error', { request_id: requestId, path, error: cause });
  }
  const code: ErrorCode = apiError?.code ?? 'server_error';
  const message = apiError?.message ?? 'An unexpected error occurred; it has been logged.';
  const status = statusOf(code);
  const headers = apiError?.responseHeaders ?? UNEXPECTED_HEADERS;
  return { status, headers, body: { error: code, message, code: status, request_id: requestId, timestamp: timestamp() } };
}

/** Koa middleware: renders whatever the rest of the chain throws with `errorAnswer`, and 404s the unrouted. */
export function errorResponder(logger: Logger = createLogger()) {
  return async (ctx: Context, next: Next) => {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) {
        throw new ApiError('not_found', `no route for ${ctx.method} ${ctx.path}`);
      }
    } catch (err) {
      const answer = errorAnswer(err, ctx.state.requestId ?? newRequestId(), logger, ctx.path);
      ctx.status = answer.status;
      for (const [name, value] of answer.headers) ctx.set(name, value);
      ctx.body = answer.body;
    }
  };
}
