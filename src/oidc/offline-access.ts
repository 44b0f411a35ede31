import type { Context, Next } from 'koa';
import { routes } from './provider.ts';

/**
 * OpenID Connect drops `offline_access` unless the request also says `prompt=consent`, which the
 * guide's apps never send. When an app asks for offline access without any prompt, we add
 * prompt=consent for it: the person is then always asked before an app gets a refresh token,
 * which is the point of the OIDC rule, and the app gets its refresh token as the guide promises.
 */
export async function offlineAccessAsksForConsent(ctx: Context, next: Next): Promise<void> {
  if (ctx.path === routes.authorization && ctx.method === 'GET') {
    const scope = ctx.query.scope;
    if (typeof scope === 'string' && scope.split(' ').includes('offline_access') && ctx.query.prompt === undefined) {
      ctx.querystring = `${ctx.querystring}&prompt=consent`;
    }
  }
  return next();
}
