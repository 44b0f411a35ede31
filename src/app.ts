import type http from 'node:http';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { startExpiredRowCleanup } from '../adapters/knex-adapter.ts';
import { AlreadyRedeemed, payloadStoreFor, WritesNotStored, type PayloadStore } from '../adapters/payload-store.ts';
import { createUserStore, type UserStore } from './accounts/store.ts';
import { apiKeyIntrospection } from './api-keys/introspection.ts';
import { createApiKeyStore } from './api-keys/store.ts';
import { apiScopes, type Config } from './config.ts';
import { migrate, openDatabase, type Database } from './db/knex.ts';
import { protectLibraryPages, renderPage } from './http/views.ts';
import { createLogger, type Logger } from './logger.ts';
import { createInteractionRoutes } from './oidc/interactions.ts';
import { createKeyStore } from './oidc/keys.ts';
import { servedOnce } from './oidc/metadata-cache.ts';
import { createProvider, metadataPaths, routes } from './oidc/provider.ts';
import { offlineAccessAsksForConsent } from './oidc/offline-access.ts';
import { tokenEndpointBodies } from './oidc/token-body.ts';
import { closeGracefully, startHttpServer } from './http/server.ts';

export interface AuthServer {
  provider: Provider;
  db: Database;
  users: UserStore;
  logger: Logger;
  /** Starts listening; resolves with the bound port (useful with port 0). */
  listen(port?: number, host?: string): Promise<number>;
  /** Hands requests under these path prefixes to another handler (the companion API on one host). */
  mount(prefixes: readonly string[], handler: http.RequestListener): void;
  /** Runs `hook` on close, after this server stops taking requests and before the database closes. */
  onClose(hook: () => Promise<void>): void;
  close(): Promise<void>;
}

/** Renders errors thrown on our own pages (interaction routes) as a page, never a stack trace. */
function pageErrors(logger: Logger) {
  return async (ctx: Context, next: Next) => {
    try {
      await next();
    } catch (err) {
      const e = err as { status?: number; statusCode?: number; error?: string; error_description?: string; message?: string };
      const status = e.status ?? e.statusCode ?? 500;
      if (status >= 500) logger.error('unhandled error', { path: ctx.path, error: e.message });
      await renderPage(ctx, 'error', {
        error: status >= 500 ? 'server_error' : (e.error ?? 'invalid_request'),
        description: status >= 500 ? 'something went wrong on our side; please try again' : (e.error_description ?? e.message),
      }, status);
    }
  };
}

/**
 * The token endpoint: a code or refresh token redeemed by a request is stored redeemed together
 * with the tokens issued for it, or not at all (payload-store.ts): a request that then fails (a bad
 * `resource` or `scope` is found only after a refresh token is rotated) leaves it usable. If those
 * could not be stored, the client gets a server error instead of tokens that would not work; if
 * another process redeemed it first, invalid_grant, as for any reuse.
 */
function storedTogether(store: PayloadStore, logger: Logger): Layer {
  return async (ctx, next) => {
    try {
      await store.redeemingIn(ctx, next, () => ctx.status < 400);
    } catch (err) {
      if (err instanceof AlreadyRedeemed) {
        ctx.status = 400;
        ctx.set('Cache-Control', 'no-store');
        ctx.body = { error: 'invalid_grant', error_description: err.message };
        return;
      }
      if (!(err instanceof WritesNotStored)) throw err;
      logger.error('token request not stored', { error: err.message });
      ctx.status = 500;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { error: 'server_error', error_description: 'the tokens could not be stored; try again' };
    }
  };
}

/** The composition root: the only place that wires storage, keys, the provider and routes. */
export async function createAuthServer(config: Config, options: { logger?: Logger; db?: Database } = {}): Promise<AuthServer> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const db = options.db ?? openDatabase(config.databaseUrl);
  await migrate(db);

  const keys = createKeyStore(db.knex);
  const users = createUserStore(db.knex);
  // Retired signing keys stay published as long as anything they signed can still be presented.
  const jwks = await keys.loadJwks(Math.max(config.accessTokenTtl, 3600) * 2);
  const cookieKey = await keys.secret('cookie-key');
  const provider = createProvider({ config, db, users, jwks, cookieKeys: [cookieKey], logger });

  const interactionRoutes = createInteractionRoutes(provider, users, cookieKey, logger).routes() as unknown as Layer;
  const interactionErrors = pageErrors(logger);
  provider.use(additions({
    metadata: servedOnce(metadataPaths) as Layer,
    tokens: storedTogether(payloadStoreFor(db.knex), logger),
    interactions: (ctx, next) => interactionErrors(ctx, () => interactionRoutes(ctx, next)),
    introspection: apiKeyIntrospection(createApiKeyStore(db.knex), { fullAccessScopes: apiScopes }),
  }));

  const stopCleanup = startExpiredRowCleanup(db.knex);
  let server: http.Server | undefined;
  const mounts: { prefixes: readonly string[]; handler: http.RequestListener }[] = [];
  const closeHooks: (() => Promise<void>)[] = [];
  const providerHandler = provider.callback();
  const under = (url: string, prefix: string) => url.startsWith(prefix) && (url.length === prefix.length || '/?'.includes(url[prefix.length]!));
  const handle: http.RequestListener = (req, res) => {
    const url = req.url ?? '/';
    const mount = mounts.find((m) => m.prefixes.some((p) => under(url, p)));
    return (mount ? mount.handler : providerHandler)(req, res);
  };

  return {
    provider,
    db,
    users,
    logger,
    mount(prefixes, handler) {
      mounts.push({ prefixes, handler });
    },
    onClose(hook) {
      closeHooks.push(hook);
    },
    async listen(port = config.port, host?: string) {
      let bound: number;
      ({ server, port: bound } = await startHttpServer(handle, port, host));
      return bound;
    },
    async close() {
      stopCleanup();
      if (server) await closeGracefully(server);
      for (const hook of closeHooks) await hook();
      if (!options.db) await db.close();
    },
  };
}

type Layer = (ctx: KoaContextWithOIDC, next: Next) => Promise<unknown>;

/**
 * What Latchkey adds to oidc-provider, each part on the paths it concerns, as one layer: a token
 * request meets one function of ours on its way to the library, not one per addition.
 */
function additions(parts: { metadata: Layer; tokens: Layer; interactions: Layer; introspection: Layer }): Layer {
  const metadata = new Set<string>(metadataPaths);
  return (ctx, next) => {
    const { path } = ctx;
    // Discovery and the JWKS, serialised once (metadata-cache.ts), before anything else runs.
    if (metadata.has(path)) return parts.metadata(ctx, next);
    if (path === routes.token) return parts.tokens(ctx, () => tokenEndpointBodies(ctx, next));
    if (path === routes.revocation) return tokenEndpointBodies(ctx, next);
    if (path === routes.introspection) return tokenEndpointBodies(ctx, () => parts.introspection(ctx, next));
    // Login and consent, with their errors rendered as a page.
    if (path.startsWith('/interaction/')) return parts.interactions(ctx, next);
    // The pages the library renders itself get the headers ours have.
    if (path.startsWith(routes.authorization)) return protectLibraryPages(ctx, () => offlineAccessAsksForConsent(ctx, next));
    if (path.startsWith(routes.end_session)) return protectLibraryPages(ctx, next);
    return next();
  };
}
