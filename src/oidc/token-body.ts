import type { Context, Next } from 'koa';
import { BodyError, checkFormFields, parseJsonParams, readRawBody } from '../http/body.ts';
import { routes } from './provider.ts';

const bodyRoutes = new Set<string>([routes.token, routes.introspection, routes.revocation]);
/**
 * What may be given more than once: a token request may name several resources (RFC 8707 §2.2);
 * oidc-provider then applies the grant's own rule (one for client_credentials). Introspection and
 * revocation take no repeated parameter.
 */
const repeatableAt: Record<string, ReadonlySet<string>> = { [routes.token]: new Set(['resource']) };

/** `application/json; charset=utf-8` -> `application/json`; '' without a Content-Type. */
const mediaType = (header: string | undefined): string => {
  if (!header) return '';
  const semicolon = header.indexOf(';');
  return (semicolon === -1 ? header : header.slice(0, semicolon)).trim().toLowerCase();
};

function invalidRequest(ctx: Context, status: number, description: string): void {
  ctx.status = status;
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { error: 'invalid_request', error_description: description };
}

/**
 * The guide posts JSON to /oauth/token; RFC 6749 posts a form. oidc-provider reads only forms, so
 * on exactly these endpoints we read the body once (64 KiB at most), turn a JSON object into the
 * equivalent form and hand that on: both encodings then meet identical validation and errors.
 */
export async function tokenEndpointBodies(ctx: Context, next: Next): Promise<void> {
  if (ctx.method !== 'POST' || !bodyRoutes.has(ctx.path)) return next();
  const type = mediaType(ctx.req.headers['content-type']);
  const isJson = type === 'application/json';
  if (!isJson && type !== 'application/x-www-form-urlencoded') {
    if (!type) return next();
    return invalidRequest(ctx, 400, 'send the parameters as application/x-www-form-urlencoded or application/json');
  }
  let form: string;
  try {
    const raw = await readRawBody(ctx);
    // A form is checked (no field repeated, but those the endpoint allows) and handed on as it
    // came; JSON becomes the same form.
    const repeatable = repeatableAt[ctx.path];
    if (isJson) form = new URLSearchParams(parseJsonParams(raw, repeatable)).toString();
    else checkFormFields((form = raw), repeatable);
  } catch (err) {
    if (!(err instanceof BodyError)) throw err;
    return invalidRequest(ctx, err.status, err.message);
  }
  // oidc-provider takes an already-read body from req.body; it must then look like a form. (Our
  // patch to it keeps it from warning about a raw body handed on this way: README.)
  (ctx.req as typeof ctx.req & { body?: string }).body = form;
  if (isJson) {
    ctx.req.headers['content-type'] = 'application/x-www-form-urlencoded';
    ctx.req.headers['content-length'] = String(Buffer.byteLength(form));
  }
  return next();
}
