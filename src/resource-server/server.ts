import type http from 'node:http';
import Koa, { type ParameterizedContext } from 'koa';
import { createUserStore } from '../accounts/store.ts';
import { createApiKeys } from '../api-keys/index.ts';
import { apiScopes, type Config } from '../config.ts';
import type { Database } from '../db/knex.ts';
import { ApiError, errorAnswer, requestIdOf } from '../errors.ts';
import { sendJson } from '../http/send-json.ts';
import { createClientIp } from '../http/client-ip.ts';
import { createLogger, type Logger } from '../logger.ts';
import { createTokenVerifiers } from '../verification/token-verifiers.ts';
import type { AuthState } from '../verification/require-auth.ts';
import type { CredentialVerifier } from '../verification/types.ts';
import { createApiRoutes, type ApiContext } from './routes.ts';
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
  /** The request listener: for a server of its own (listen) or to mount beside the authorization server. */
  handler: http.RequestListener;
  verifiers: readonly CredentialVerifier[];
  listen(port?: number, host?: string): Promise<number>;
  close(): Promise<void>;
}

/**
 * The whole request in one layer: a request id (echoed in X-Request-ID, in every error body and
 * log line), the route, `Cache-Control: no-store` (answers depend on the caller's credential, so
 * no shared cache may keep them), errors in the guide's shape, and one log line that never
 * carries the query string (it may hold a token). The answer is written with sendJson; a request
 * answered from memory takes no promise at all (see CredentialVerifier.verify).
 */
function handleRequests(routeFor: ReturnType<typeof createApiRoutes>, logger: Logger) {
  const logRequests = logger.enabled('info');

  const send = (ctx: ParameterizedContext<AuthState>, status: number, body: unknown, headers: string[], started: number) => {
    sendJson(ctx, status, body, headers);
    if (!logRequests) return;
    const { auth } = ctx.state as Partial<AuthState>;
    logger.info('request', {
      request_id: headers[1],
      method: ctx.method,
      path: ctx.path,
      status,
      ms: Math.round((performance.now() - started) * 10) / 10,
      ...(auth ? { auth_method: auth.method, client_id: auth.clientId ?? undefined, key_id: auth.keyId } : {}),
    });
  };
  const fail = (ctx: ParameterizedContext<AuthState>, requestId: string, err: unknown, started: number) => {
    const answer = errorAnswer(err, requestId, logger, ctx.path);
    const headers = ['X-Request-ID', requestId];
    for (const [name, value] of answer.headers) headers.push(name, value);
    send(ctx, answer.status, answer.body, headers, started);
  };
  const succeed = (ctx: ParameterizedContext<AuthState>, requestId: string, body: unknown, started: number) => {
    send(ctx, ctx.status, body, ['X-Request-ID', requestId, 'Cache-Control', 'no-store'], started);
  };

  const respond = (ctx: ParameterizedContext<AuthState>, requestId: string, started: number) => {
    let body: unknown;
    try {
      const route = routeFor(ctx);
      if (!route) throw new ApiError('not_found', `No route for ${ctx.method} ${ctx.path}.`);
      // Routed: 200 unless the handler says otherwise.
      ctx.res.statusCode = 200;
      body = route(ctx as ApiContext);
      // An answer that cannot be serialised fails before anything is written: fail() reports it.
      if (!(body instanceof Promise)) return succeed(ctx, requestId, body, started);
    } catch (err) {
      return fail(ctx, requestId, err, started);
    }
    return body.then((value) => succeed(ctx, requestId, value, started)).catch((err: unknown) => fail(ctx, requestId, err, started));
  };
  // What fail() itself could not send (a bug of ours, or an error header Node refuses to write) is
  // answered as the guide's 500 by fail() once more; failing that, the connection is dropped. Never
  // an unhandled rejection or a request left hanging.
  const lastResort = (ctx: ParameterizedContext<AuthState>, requestId: string, err: unknown, started: number) => {
    if (!ctx.res.headersSent) {
      try {
        return fail(ctx, requestId, err, started);
      } catch (again) {
        err = again;
      }
    }
    logger.error('unhandled error', { request_id: requestId, path: ctx.path, error: (err as Error)?.message });
    ctx.res.destroy();
  };

  return (ctx: ParameterizedContext<AuthState>): void => {
    const started = logRequests ? performance.now() : 0;
    const requestId = requestIdOf(ctx);
    try {
      respond(ctx, requestId, started)?.catch((err: unknown) => lastResort(ctx, requestId, err, started));
    } catch (err) {
      lastResort(ctx, requestId, err, started);
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
  const routes = createApiRoutes({
    store: createResourceStore(options.db.knex),
    accounts: createUserStore(options.db.knex),
    verifiers,
    apiKeys: apiKeys.routes,
  });

  // Koa's context (ctx.path, ctx.query, ctx.ip, ...) is what routes and verifiers read, but not
  // Koa's request handling: handleRequests answers every request itself, so the promise chain,
  // the response-finished listener and the default 404 Koa would add to each request go unused.
  const app = new Koa({ proxy: config.trustProxy });
  const handle = handleRequests(routes, logger);
  const handler: http.RequestListener = (req, res) => handle(app.createContext<AuthState>(req, res));

  let server: http.Server | undefined;
  return {
    handler,
    verifiers,
    async listen(port = config.apiPort, host?: string) {
      let bound: number;
      ({ server, port: bound } = await startHttpServer(handler, port, host));
      return bound;
    },
    async close() {
      if (server) await closeGracefully(server);
      // After the last request: nothing it recorded is lost.
      await apiKeys.close();
    },
  };
}
