import type { Context, Next } from 'koa';
import { BodyError, parseForm, parseJsonParams, readRawBody } from '../http/body.ts';
import { routes } from './provider.ts';

const bodyRoutes = new Set<string>([routes.token, routes.introspection, routes.revocation]);

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
  const isJson = ctx.is('application/json');
  const isForm = ctx.is('application/x-www-form-urlencoded');
  if (!isJson && !isForm) {
    if (!ctx.get('content-type')) return next();
    return invalidRequest(ctx, 400, 'send the parameters as application/x-www-form-urlencoded or application/json');
  }
  let params: Record<string, string>;
  try {
    const raw = await readRawBody(ctx);
    params = isJson ? parseJsonParams(raw) : parseForm(raw);
  } catch (err) {
    if (!(err instanceof BodyError)) throw err;
    return invalidRequest(ctx, err.status, err.message);
  }
  const form = new URLSearchParams(params).toString();
  // oidc-provider takes an already-read body from req.body; it must then look like a form.
  (ctx.req as typeof ctx.req & { body?: string }).body = form;
  ctx.req.headers['content-type'] = 'application/x-www-form-urlencoded';
  ctx.req.headers['content-length'] = String(Buffer.byteLength(form));
  return next();
}
