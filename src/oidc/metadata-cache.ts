import { createHash } from 'node:crypto';
import type { Context, Next } from 'koa';

interface Document {
  body: string;
  type: string;
  etag: string;
}

// Discovery URLs depend on the Host (and, behind a trusted proxy, the forwarded protocol), which
// the client chooses: keep a few variants, and build the rest per request as the library does.
const MAX_VARIANTS = 16;

/**
 * Discovery and the JWKS do not change while the server runs (keys and configuration are loaded
 * at start), yet the library builds and serialises them on every request. This serves the
 * library's own answer, serialised once per origin, with a strong ETag so clients can revalidate
 * for free. Registered in front of the provider; other methods (CORS preflight) pass through.
 */
export function servedOnce(paths: readonly string[]) {
  const served = new Set(paths);
  const documents = new Map<string, Document>();

  return async (ctx: Context, next: Next): Promise<void> => {
    if ((ctx.method !== 'GET' && ctx.method !== 'HEAD') || !served.has(ctx.path)) return next();
    const key = `${ctx.origin}${ctx.path}`;
    let doc = documents.get(key);
    if (doc) {
      // What the library's CORS middleware sets on these routes.
      ctx.vary('Origin');
      ctx.set('Access-Control-Allow-Origin', ctx.get('Origin') || '*');
    } else {
      await next();
      if (ctx.status !== 200 || ctx.body === null || typeof ctx.body !== 'object' || Buffer.isBuffer(ctx.body)) return;
      const body = JSON.stringify(ctx.body);
      doc = { body, type: ctx.response.get('Content-Type') || 'application/json; charset=utf-8', etag: `"${createHash('sha256').update(body).digest('base64url')}"` };
      if (documents.size < MAX_VARIANTS) documents.set(key, doc);
    }
    ctx.status = 200;
    ctx.type = doc.type;
    ctx.etag = doc.etag;
    if (ctx.fresh) {
      ctx.status = 304;
      return;
    }
    ctx.body = doc.body;
  };
}
