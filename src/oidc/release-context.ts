import type { KoaContextWithOIDC } from 'oidc-provider';

/**
 * Lets a finished request's objects die young.
 *
 * oidc-provider gives every request its `ctx.oidc` with `Object.defineProperty` and a getter
 * closed over the context. V8 keeps such an accessor in the old generation, so until the next
 * full collection every young-generation collection finds the getter, and through it the whole
 * request (Koa context, IncomingMessage, ServerResponse, headers, parameters, the OIDC context),
 * alive: about 8 KB a request is copied and promoted, and each young collection takes several
 * milliseconds instead of well under one. Once the response has been handed to the socket,
 * nothing reads the context again (Koa's own finish handler only looks at an error), so cutting
 * its links to the rest of the request leaves the accessor holding little more than an empty shell.
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
