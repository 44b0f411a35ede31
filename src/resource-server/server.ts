import type http from 'node:http';
import Koa, { type Context, type Next } from 'koa';
import { createUserStore } from '../accounts/store.ts';
import { createApiKeys } from '../api-keys/index.ts';
import { apiScopes, type Config } from '../config.ts';
import type { Database } from '../db/knex.ts';
import { ApiError, assignRequestId, errorResponder } from '../errors.ts';
import { createClientIp } from '../http/client-ip.ts';
import { createLogger, type Logger } from '../logger.ts';
import { createTokenVerifiers } from '../verification/token-verifiers.ts';
import type { CredentialVerifier } from '../verification/types.ts';
import { createApiRoutes } from './routes.ts';
import { createResourceStore } from './store.ts';
import { closeGracefully, startHttpServer } from '../http/server.ts';

export interface ApiServerOptions {
  /** The database the authorization server uses: /v1/users/me reads its accounts. Migrated already. */
  db: Database;
  logger?: Logger;
  /** How credentials are verified; default: API keys, and Latchkey's JWT and opaque access tokens. */
  verifiers?: readonly CredentialVerifier[];
  /** This API's introspection client, for the default verifiers (opaque tokens need it). */
  introspection?: { clientId: string; clientSecret: string };
  now?: () => number;
}

export interface ApiServer {
  app: Koa;
  verifiers: readonly CredentialVerifier[];
  listen(port?: number, host?: string): Promise<number>;
  close(): Promise<void>;
}

/**
 * What every request gets, in one layer: a request id, `Cache-Control: no-store` (answers depend
 * on the caller's credential, so no shared cache may keep them), and one log line carrying the
 * request id but never the query string (it may hold a token).
 */
function envelope(logger: Logger) {
  return async (ctx: Context, next: Next) => {
    const started = performance.now();
    assignRequestId(ctx);
    ctx.set('Cache-Control', 'no-store');
    try {
      await next();
    } finally {
      const auth = ctx.state.auth as { method?: string; clientId?: string | null; keyId?: string } | undefined;
      logger.info('request', {
        request_id: ctx.state.requestId,
        method: ctx.method,
        path: ctx.path,
        status: ctx.status,
        ms: Math.round((performance.now() - started) * 10) / 10,
        ...(auth ? { auth_method: auth.method, client_id: auth.clientId ?? undefined, key_id: auth.keyId } : {}),
      });
    }
  };
}

/** The companion API: the guide's /v1 endpoints behind requireAuth, with their data in `db`. */
export function createApiServer(config: Config, options: ApiServerOptions): ApiServer {
  const logger = options.logger ?? createLogger(config.logLevel);
  const apiKeys = createApiKeys({
    knex: options.db.knex,
    logger,
    scopes: apiScopes,
    cacheSeconds: config.verificationCacheSeconds,
    usageFlushSeconds: config.apiKeyUsageFlushSeconds,
    clientIp: createClientIp(config.trustedProxies),
    now: options.now,
  });
  // API keys first: their sk_/rk_ prefix is recognised without I/O, and they would also look opaque.
  const verifiers = options.verifiers ?? [
    apiKeys.verifier,
    ...createTokenVerifiers({
      authServerUrl: config.authServerUrl,
      audience: config.apiAudience,
      introspection: options.introspection,
      cacheSeconds: config.verificationCacheSeconds,
      now: options.now,
    }),
  ];
  const router = createApiRoutes({
    store: createResourceStore(options.db.knex),
    accounts: createUserStore(options.db.knex),
    verifiers,
    apiKeys: apiKeys.routes,
  });

  const app = new Koa({ proxy: config.trustProxy });
  app.use(envelope(logger));
  app.use(errorResponder(logger));
  app.use(async (ctx, next) => {
    await next();
    // allowedMethods() answers 405 (with an Allow header) or 501 without a body: give it ours.
    if ((ctx.status === 405 || ctx.status === 501) && ctx.body === undefined) {
      throw new ApiError('method_not_allowed', `${ctx.method} is not allowed on ${ctx.path}${ctx.response.get('Allow') ? `; allowed: ${ctx.response.get('Allow')}` : ''}.`);
    }
  });
  app.use(router.routes());
  app.use(router.allowedMethods());
  // Koa logs errors that reach it; ours are all rendered by errorResponder first.
  app.silent = true;

  let server: http.Server | undefined;
  return {
    app,
    verifiers,
    async listen(port = config.apiPort, host?: string) {
      let bound: number;
      ({ server, port: bound } = await startHttpServer(app.callback(), port, host));
      return bound;
    },
    async close() {
      if (server) await closeGracefully(server);
      // After the last request: nothing it recorded is lost.
      await apiKeys.close();
    },
  };
}
