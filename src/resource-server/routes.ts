import Router, { type RouterContext } from '@koa/router';
import { apiKeyHandlers, type ApiKeyRouteDeps } from '../api-keys/routes.ts';
import { ApiError } from '../errors.ts';
import type { UserStore } from '../accounts/store.ts';
import { requireAuth, type AuthState } from '../verification/require-auth.ts';
import type { AuthContext, CredentialVerifier } from '../verification/types.ts';
import { jsonBody, newProject, newUser, page, parse, resourceId, userChanges } from './schemas.ts';
import { DuplicateError, type Environment, type ResourceStore } from './store.ts';

/**
 * Which scopes each route accepts: any one of those listed (an empty list: any valid credential).
 * `admin` and `admin:all` are accepted everywhere (SUPER_SCOPES). Routes are matched in this
 * order, so /v1/users/me comes before /v1/users/:id.
 */
export const routeScopes = {
  'GET /v1/auth/verify': [],
  'GET /v2/auth/test': [],
  'GET /v1/users/me': [],
  'GET /v1/users': ['read:users', 'read'],
  'GET /v1/users/:id': ['read:users', 'read'],
  'POST /v1/users': ['write:users', 'write'],
  'PATCH /v1/users/:id': ['write:users', 'write'],
  'DELETE /v1/users/:id': ['delete:users', 'delete'],
  'GET /v1/projects': ['read:projects', 'read'],
  'POST /v1/projects': ['write:projects', 'write'],
  // Key management: an OAuth token with admin, or a full-access sk_ key (api-keys/routes.ts says whose keys).
  'GET /api-keys': ['admin'],
  'POST /api-keys': ['admin'],
  'GET /api-keys/:id': ['admin'],
  'DELETE /api-keys/:id': ['admin'],
  'POST /api-keys/:id/roll': ['admin'],
  'GET /api-keys/:id/events': ['admin'],
} as const satisfies Record<string, readonly string[]>;

export type RouteKey = keyof typeof routeScopes;
type Handler = (ctx: RouterContext<AuthState>) => Promise<void>;

export interface RouteDeps {
  store: ResourceStore;
  /** The authorization server's accounts, for /v1/users/me. */
  accounts: UserStore;
  verifiers: readonly CredentialVerifier[];
  apiKeys: ApiKeyRouteDeps;
}

// OAuth and JWT access tokens act on live data; API keys say which environment they belong to.
const environmentOf = (auth: AuthContext): Environment => auth.environment ?? 'live';
const actorOf = (auth: AuthContext) => auth.userId ?? auth.clientId ?? auth.keyId ?? 'unknown';
const notFound = (what: string, id: string) => new ApiError('not_found', `No ${what} with id ${id}.`);
function found<T>(value: T | undefined, what: string, id: string): T {
  if (value === undefined) throw notFound(what, id);
  return value;
}

function verifyResponse(ctx: RouterContext<AuthState>): Promise<void> {
  const { auth } = ctx.state;
  ctx.body = {
    authenticated: true,
    user_id: auth.userId,
    client_id: auth.clientId,
    scopes: auth.scopes,
    expires_at: auth.expiresAt?.toISOString() ?? null,
    auth_method: auth.method,
    ...(auth.method === 'api_key' ? { environment: auth.environment, key_id: auth.keyId } : {}),
  };
  return Promise.resolve();
}

function handlers({ store, accounts, apiKeys }: RouteDeps): Record<RouteKey, Handler> {
  const idOf = (ctx: RouterContext<AuthState>, what: string) => {
    const id = ctx.params.id ?? '';
    // A malformed id cannot exist; answering 404 keeps ids opaque to callers.
    if (!resourceId.safeParse(id).success) throw notFound(what, id);
    return id;
  };

  return {
    ...apiKeyHandlers(apiKeys),
    'GET /v1/auth/verify': verifyResponse,
    'GET /v2/auth/test': verifyResponse,

    async 'GET /v1/users/me'(ctx) {
      const { auth } = ctx.state;
      if (!auth.userId) {
        throw new ApiError('forbidden', 'This credential acts for an application, not a user (client credentials); /v1/users/me needs a user\'s token.');
      }
      const user = await accounts.findById(auth.userId);
      if (!user) throw notFound('user', auth.userId);
      ctx.body = { id: user.id, email: user.email, name: user.name, created_at: user.createdAt.toISOString() };
    },

    async 'GET /v1/users'(ctx) {
      const { limit, offset } = parse(page, ctx.query, 'query');
      ctx.body = { data: await store.users.list(environmentOf(ctx.state.auth), { limit, offset }), limit, offset };
    },

    async 'GET /v1/users/:id'(ctx) {
      const id = idOf(ctx, 'user');
      ctx.body = found(await store.users.find(environmentOf(ctx.state.auth), id), 'user', id);
    },

    async 'POST /v1/users'(ctx) {
      const input = await jsonBody(ctx, newUser);
      ctx.status = 201;
      ctx.body = await store.users.create(environmentOf(ctx.state.auth), input, actorOf(ctx.state.auth));
    },

    async 'PATCH /v1/users/:id'(ctx) {
      const id = idOf(ctx, 'user');
      const changes = await jsonBody(ctx, userChanges);
      ctx.body = found(await store.users.update(environmentOf(ctx.state.auth), id, changes), 'user', id);
    },

    async 'DELETE /v1/users/:id'(ctx) {
      const id = idOf(ctx, 'user');
      if (!(await store.users.delete(environmentOf(ctx.state.auth), id))) throw notFound('user', id);
      ctx.status = 204;
    },

    async 'GET /v1/projects'(ctx) {
      const { limit, offset } = parse(page, ctx.query, 'query');
      ctx.body = { data: await store.projects.list(environmentOf(ctx.state.auth), { limit, offset }), limit, offset };
    },

    async 'POST /v1/projects'(ctx) {
      const input = await jsonBody(ctx, newProject);
      ctx.status = 201;
      ctx.body = await store.projects.create(environmentOf(ctx.state.auth), input, actorOf(ctx.state.auth));
    },
  };
}

/** The companion API's routes, each guarded by requireAuth with the scopes from `routeScopes`. */
export function createApiRoutes(deps: RouteDeps): Router<AuthState> {
  const router = new Router<AuthState>();
  const handle = handlers(deps);
  for (const [route, scopes] of Object.entries(routeScopes) as [RouteKey, readonly string[]][]) {
    const [method, path] = route.split(' ') as [string, string];
    const handler = handle[route];
    router.register(path, [method], [
      requireAuth({ verifiers: deps.verifiers, scopes }),
      async (ctx) => {
        try {
          await handler(ctx);
        } catch (err) {
          if (err instanceof DuplicateError) throw new ApiError('conflict', `${err.message}.`);
          throw err;
        }
      },
    ]);
  }
  return router;
}
