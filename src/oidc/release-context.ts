import type { KoaContextWithOIDC } from 'oidc-provider';

/**
 * Lets a finished request's objects die young.
 *
 * oidc-provider gives every request its `ctx.oidc` with `Object.defineProperty` and a getter
 * closed over the context. That gives each context a hidden class and accessor of its own, which
 * V8 keeps in the old generation; until the next full collection, every young-generation
 * collection finds the getter through them and keeps the whole request alive: Koa's context,
 * IncomingMessage, ServerResponse, headers, parameters, the OIDC context. Measured here, a bare
 * Koa app doing the same kept ~2 MB alive per young collection instead of ~20 KB, and those
 * collections took ~15 ms instead of ~0.5 ms; on our token endpoint they took ~9 ms, which was
 * most of the latency above p99 at half load.
 * Once the response has been handed to the socket nothing reads the context again (Koa's own
 * finish handler only looks at an error), so its links to the rest of the request are cut: the
 * getter then holds little more than two empty shells.
 */
export function releaseWhenFinished(ctx: KoaContextWithOIDC): void {
  ctx.res.once('finish', () => release(ctx));
}

function release(ctx: KoaContextWithOIDC): void {
  // The OIDC context only if the request made one (reading the getter would make it now).
  if (Object.getOwnPropertyDescriptor(ctx, 'oidc')) {
    // Its parameters, body, client, token, claims ...: whatever fields this version of the library sets.
    const oidc = ctx.oidc as unknown as object;
    for (const key of Object.keys(oidc)) Reflect.set(oidc, key, undefined);
  }
  for (const key of REQUEST_LINKS) Reflect.set(ctx, key, undefined);
}

/** What a Koa context holds of its request: Koa's wrappers, Node's objects and the middleware state. */
const REQUEST_LINKS = ['request', 'response', 'req', 'res', 'state'] as const;
