import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import { ApiError } from '../errors.ts';
import { CidrError, cidrWithin, parseCidrs } from '../http/client-ip.ts';
import type { ApiContext, ApiHandler } from '../resource-server/routes.ts';
import { jsonBody, parse, singleLine } from '../resource-server/schemas.ts';
import type { AuthContext } from '../verification/types.ts';
import type { Environment } from './format.ts';
import { ApiKeyRuleError, MAX_ROLL_GRACE_SECONDS, statusOf, type ApiKeyService } from './service.ts';
import type { ApiKey } from './store.ts';
import type { UsageRecorder } from './usage.ts';

export interface ApiKeyRouteDeps {
  service: ApiKeyService;
  usage: UsageRecorder;
  /** Scopes a key may be given: the companion API's scopes. */
  knownScopes: readonly string[];
  clientIp: (req: IncomingMessage) => string;
  now?: () => number;
}

export type ApiKeyRouteKey = 'GET /api-keys' | 'POST /api-keys' | 'GET /api-keys/:id' | 'DELETE /api-keys/:id' | 'POST /api-keys/:id/roll' | 'GET /api-keys/:id/events';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
const KEY_ID = /^key_[0-9a-f]{32}$/;
/** Whether the request carries a body at all (a length, or chunks). */
const hasBody = (ctx: ApiContext) => (ctx.request.length ?? 0) > 0 || ctx.get('transfer-encoding') !== '';

/**
 * A key that makes a key passes on its own limits: the new key expires no later and works from
 * no more addresses than its maker, or a key meant to die or to stay in one office could mint a
 * successor without either limit. An OAuth token acts for the person, who may set any limit.
 */
function withinMaker(maker: AuthContext, expiresAt: number | undefined, ipAllowlist: string[] | undefined) {
  if (maker.method !== 'api_key') return { expiresAt, ipAllowlist };
  const makerEnd = maker.expiresAt?.getTime();
  if (makerEnd !== undefined && expiresAt !== undefined && expiresAt > makerEnd) {
    throw new ApiError('forbidden', `expires_at: a key cannot outlive the key that creates it, which stops working at ${new Date(makerEnd).toISOString()}.`);
  }
  const makerIps = maker.ipAllowlist;
  if (makerIps && ipAllowlist && !(ipAllowlist.length > 0 && ipAllowlist.every((cidr) => cidrWithin(cidr, makerIps)))) {
    throw new ApiError('forbidden', `ip_allowlist: every range must lie within the creating key's allowlist (${makerIps.join(', ')}).`);
  }
  return { expiresAt: expiresAt ?? makerEnd, ipAllowlist: ipAllowlist ?? (makerIps && [...makerIps]) };
}

/** A key as every response shows it: never the secret, only its prefix and last four characters. */
function present(key: ApiKey, at: number) {
  return {
    id: key.id,
    object: 'api_key',
    name: key.name,
    environment: key.environment,
    type: key.restricted ? 'restricted' : 'secret',
    prefix: key.prefix,
    last_four: key.lastFour,
    redacted_key: `${key.prefix}...${key.lastFour}`,
    scopes: key.scopes,
    full_access: key.scopes === null,
    ip_allowlist: key.ipAllowlist,
    status: statusOf(key, at),
    created_at: iso(key.createdAt),
    expires_at: iso(key.expiresAt),
    revoked_at: iso(key.revokedAt),
    last_used_at: iso(key.lastUsedAt),
    request_count: key.requestCount,
  };
}

/**
 * Who may manage keys, and which: a person (an OAuth token of theirs with `admin`) manages all of
 * their keys; an sk_ key with full or admin access manages its owner's keys of its own environment.
 */
function managerOf(auth: AuthContext): { userId: string; environments: readonly Environment[] } {
  if (auth.method === 'api_key') {
    if (auth.restricted) {
      throw new ApiError('forbidden', 'Restricted (rk_) keys cannot manage API keys; use an sk_ key or an OAuth access token with the admin scope.');
    }
    return { userId: auth.userId!, environments: [auth.environment ?? 'test'] };
  }
  if (!auth.userId) {
    throw new ApiError('forbidden', 'API keys belong to a person, and this token acts for an application (client credentials); use a token a person granted through the authorization-code flow.');
  }
  return { userId: auth.userId, environments: ['test', 'live'] };
}

export function apiKeyHandlers(deps: ApiKeyRouteDeps): Record<ApiKeyRouteKey, ApiHandler> {
  const now = deps.now ?? Date.now;
  const scope = z.enum(deps.knownScopes as [string, ...string[]]);
  const environment = z.enum(['test', 'live']);
  const newKey = z.strictObject({
    name: singleLine(200),
    scopes: z.array(scope).max(50).optional(),
    environment: environment.optional(),
    restricted: z.boolean().default(false),
    expires_at: z.iso.datetime({ offset: true }).optional(),
    ip_allowlist: z.array(z.string()).max(100).optional(),
  });
  const rollBody = z.strictObject({ expires_in: z.number().int().min(0).max(MAX_ROLL_GRACE_SECONDS).default(0) });
  const listQuery = z.strictObject({ environment: environment.optional() });
  const eventsQuery = z.strictObject({ limit: z.coerce.number().int().min(1).max(500).default(100) });

  const badInput = (err: unknown): never => {
    if (err instanceof ApiKeyRuleError || err instanceof CidrError) {
      throw new ApiError('invalid_request', `Invalid request body: ${err instanceof CidrError ? `ip_allowlist: ${err.message}` : err.message}.`);
    }
    throw err;
  };

  /** The caller's key with this id; another account's key, or another environment's, is not found. */
  const ownKey = async (ctx: ApiContext): Promise<{ key: ApiKey; userId: string }> => {
    const { userId, environments } = managerOf(ctx.state.auth);
    const id = ctx.params.id ?? '';
    const key = KEY_ID.test(id) ? await deps.service.find(userId, id) : undefined;
    if (!key || !environments.includes(key.environment)) throw new ApiError('not_found', `No API key with id ${id}.`);
    return { key, userId };
  };

  return {
    async 'POST /api-keys'(ctx) {
      const manager = managerOf(ctx.state.auth);
      const input = await jsonBody(ctx, newKey);
      const env = input.environment ?? manager.environments[0]!;
      if (!manager.environments.includes(env)) {
        throw new ApiError('forbidden', `An sk_${manager.environments[0]}_ key can only manage ${manager.environments[0]} keys; use an OAuth access token or an sk_${env}_ key to create ${env} keys.`);
      }
      let ipAllowlist: string[] | undefined;
      try {
        ipAllowlist = input.ip_allowlist && parseCidrs(input.ip_allowlist);
      } catch (err) {
        badInput(err);
      }
      const limits = withinMaker(ctx.state.auth, input.expires_at === undefined ? undefined : Date.parse(input.expires_at), ipAllowlist);
      const created = await deps.service.create({
        userId: manager.userId,
        name: input.name,
        environment: env,
        restricted: input.restricted,
        scopes: input.scopes,
        ...limits,
      }, deps.clientIp(ctx.req)).catch(badInput);
      ctx.status = 201;
      ctx.set('Location', `/api-keys/${created.key.id}`);
      // The only time the secret is ever shown.
      return { ...present(created.key, now()), key: created.secret };
    },

    async 'GET /api-keys'(ctx) {
      const { userId, environments } = managerOf(ctx.state.auth);
      const query = parse(listQuery, ctx.query, 'query');
      if (query.environment && !environments.includes(query.environment)) throw new ApiError('forbidden', `This key can only see ${environments[0]} keys.`);
      await deps.usage.flush();
      const keys = (await deps.service.list(userId, query.environment)).filter((k) => environments.includes(k.environment));
      const at = now();
      return { data: keys.map((k) => present(k, at)) };
    },

    async 'GET /api-keys/:id'(ctx) {
      await deps.usage.flush();
      const { key } = await ownKey(ctx);
      return present(key, now());
    },

    async 'DELETE /api-keys/:id'(ctx) {
      const { key, userId } = await ownKey(ctx);
      const revoked = await deps.service.revoke(userId, key.id, deps.clientIp(ctx.req));
      return present(revoked ?? key, now());
    },

    async 'POST /api-keys/:id/roll'(ctx) {
      const { key, userId } = await ownKey(ctx);
      const { expires_in } = hasBody(ctx) ? await jsonBody(ctx, rollBody) : { expires_in: 0 };
      if (key.revokedAt !== null) throw new ApiError('conflict', `API key ${key.id} is revoked; create a new key instead.`);
      const rolled = await deps.service.roll(userId, key.id, expires_in, deps.clientIp(ctx.req)).catch(badInput);
      if (!rolled) throw new ApiError('conflict', `API key ${key.id} is revoked; create a new key instead.`);
      return { ...present(rolled.key, now()), key: rolled.secret, previous_key_expires_at: iso(rolled.previousExpiresAt) };
    },

    async 'GET /api-keys/:id/events'(ctx) {
      const { limit } = parse(eventsQuery, ctx.query, 'query');
      await deps.usage.flush();
      const { key } = await ownKey(ctx);
      const events = await deps.service.events(key.id, limit);
      return { data: events.map((e) => ({ type: e.type, ip: e.ip, detail: e.detail, created_at: iso(e.createdAt) })) };
    },
  };
}
