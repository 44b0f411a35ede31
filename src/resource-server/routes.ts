import FindMyWay, { type HTTPMethod } from 'find-my-way';
import type { ParameterizedContext } from 'koa';
import { apiKeyHandlers, type ApiKeyRouteDeps } from '../api-keys/routes.ts';
import { ApiError } from '../errors.ts';
import type { UserStore } from '../accounts/store.ts';
import { authenticate, type AuthState } from '../verification/require-auth.ts';
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
/** A request to one of these routes: requireAuth's `state.auth`, and the path's `:id`. */
export type ApiContext = ParameterizedContext<AuthState> & { params: { id?: string } };
/** Answers with the JSON it returns (200 unless it sets ctx.status), or throws an ApiError. */
export type ApiHandler = (ctx: ApiContext) => unknown;

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

/** The guide's /v1/auth/verify answer: who the credential is and what it may do. */
function verifyResponse(ctx: ApiContext) {
  const { auth } = ctx.state;
  return {
    authenticated: true,
    user_id: auth.userId,
    client_id: auth.clientId,
    scopes: auth.scopes,
    expires_at: auth.expiresAt?.toISOString() ?? null,
    auth_method: auth.method,
    ...(auth.method === 'api_key' ? { environment: auth.environment, key_id: auth.keyId } : {}),
  };
}

function handlers({ store, accounts, apiKeys }: RouteDeps): Record<RouteKey, ApiHandler> {
  const idOf = (ctx: ApiContext, what: string) => {
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
      return { id: user.id, email: user.email, name: user.name, created_at: user.createdAt.toISOString() };
    },

    async 'GET /v1/users'(ctx) {
      const { limit, offset } = parse(page, ctx.query, 'query');
      return { data: await store.users.list(environmentOf(ctx.state.auth), { limit, offset }), limit, offset };
    },

    async 'GET /v1/users/:id'(ctx) {
      const id = idOf(ctx, 'user');
      return found(await store.users.find(environmentOf(ctx.state.auth), id), 'user', id);
    },

    async 'POST /v1/users'(ctx) {
      const input = await jsonBody(ctx, newUser);
      ctx.status = 201;
      return await store.users.create(environmentOf(ctx.state.auth), input, actorOf(ctx.state.auth));
    },

    async 'PATCH /v1/users/:id'(ctx) {
      const id = idOf(ctx, 'user');
      const changes = await jsonBody(ctx, userChanges);
      return found(await store.users.update(environmentOf(ctx.state.auth), id, changes), 'user', id);
    },

    async 'DELETE /v1/users/:id'(ctx) {
      const id = idOf(ctx, 'user');
      if (!(await store.users.delete(environmentOf(ctx.state.auth), id))) throw notFound('user', id);
      ctx.status = 204;
    },

    async 'GET /v1/projects'(ctx) {
      const { limit, offset } = parse(page, ctx.query, 'query');
      return { data: await store.projects.list(environmentOf(ctx.state.auth), { limit, offset }), limit, offset };
    },

    async 'POST /v1/projects'(ctx) {
      const input = await jsonBody(ctx, newProject);
      ctx.status = 201;
      return await store.projects.create(environmentOf(ctx.state.auth), input, actorOf(ctx.state.auth));
    },
  };
}

/** A routed request: authenticate, then the handler's JSON, now or later (see CredentialVerifier.verify). */
export type ApiRoute = (ctx: ApiContext) => unknown;

/** A store's DuplicateError is the caller's conflict, not a server error. */
const asConflict = (err: unknown): never => {
  if (err instanceof DuplicateError) throw new ApiError('conflict', `${err.message}.`);
  throw err;
};

/**
 * The companion API's routes, each guarded by `authenticate` with the scopes from `routeScopes`,
 * in find-my-way's compiled tree (static paths before `:id`, a trailing slash ignored, HEAD
 * answered as GET). Returns the route for a request, or undefined for an unknown path; a known
 * path with another method is a 405 naming the allowed ones, and OPTIONS lists them.
 */
export function createApiRoutes(deps: RouteDeps): (ctx: ParameterizedContext<AuthState>) => ApiRoute | undefined {
  const router = FindMyWay({ ignoreTrailingSlash: true });
  const handle = handlers(deps);
  const methods = new Set<HTTPMethod>();
  for (const [route, scopes] of Object.entries(routeScopes) as [RouteKey, readonly string[]][]) {
    const [method, path] = route.split(' ') as [HTTPMethod, string];
    const handler = handle[route];
    const answer = (ctx: ApiContext) => {
      const body = handler(ctx);
      return body instanceof Promise ? body.catch(asConflict) : body;
    };
    const guarded: ApiRoute = (ctx) => {
      const auth = authenticate(ctx, deps.verifiers, scopes);
      return auth instanceof Promise ? auth.then(() => answer(ctx)) : answer(ctx);
    };
    methods.add(method);
    // find-my-way's handler slot is typed for bare Node handlers; our route rides in its store.
    router.on(method, path, () => undefined, guarded);
  }
  router.compile();

  return (ctx) => {
    const found = router.find(ctx.method === 'HEAD' ? 'GET' : (ctx.method as HTTPMethod), ctx.path);
    if (found) {
      (ctx as ApiContext).params = found.params;
      return found.store as ApiRoute;
    }
    const allowed = [...methods].filter((method) => router.find(method, ctx.path));
    if (allowed.length === 0) return undefined;
    if (allowed.includes('GET')) allowed.unshift('HEAD');
    const allow = allowed.join(', ');
    // OPTIONS asks what a path allows (RFC 9110 9.3.7): that needs no credential.
    if (ctx.method === 'OPTIONS') {
      return () => {
        ctx.set('Allow', allow);
        ctx.status = 204;
      };
    }
    throw new ApiError('method_not_allowed', `${ctx.method} is not allowed on ${ctx.path}; allowed: ${allow}.`, undefined, { Allow: allow });
  };
}
