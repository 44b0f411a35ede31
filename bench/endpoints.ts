import type { Request } from 'autocannon';
import { AuthorizationCodeFlow, completeFlow } from './flow.ts';
import type { LoadPlan } from './load.ts';
import type { ClientCredentials, ServerFixtures, TokenMode } from './protocol.ts';

/** H is bare Koa; peer is bare oidc-provider in memory; sqlite and postgres are Latchkey. */
export type TargetId = 'H' | 'peer' | 'sqlite' | 'postgres';

export interface Endpoint {
  id: string;
  label: string;
  /** Which token format the server must issue: picks the opaque or the JWT instance of a target. */
  mode: TokenMode;
  targets: readonly TargetId[];
  /** What this row means, for results.md (e.g. how "cold" is defined). */
  definition?: string;
  /** Served by the companion API's process (its RSS is this row's), not the authorization server's. */
  companionApi?: boolean;
  /**
   * The companion API answers it without asking the authorization server (API keys are read from
   * the shared database; JWTs are checked against keys it fetched before the run): during the
   * paced run the authorization server, idle, is stopped like the other targets' servers. Left
   * running, it ran V8's memory reducer there (full collections of 4-16 ms, 0.6 s apart, on the
   * API's core), and each one paused the API for 10-20 ms (API key unknown @8,150: p99 15.8 ms).
   */
  withoutAuthServer?: boolean;
  /**
   * Answered from the server's memory, with no query to its database (discovery and JWKS,
   * serialised once: checked against PostgreSQL's own transaction count). On PostgreSQL's rows
   * the paced client then polls as on any other target's (see sharesCore in paced-client.mjs):
   * the database it would leave the core to is idle.
   */
  servedFromMemory?: boolean;
  /** Builds the load against a running server; checks once that the endpoint answers as expected. */
  prepare(fx: ServerFixtures): Promise<LoadPlan>;
}

const AUTH_SERVERS: readonly TargetId[] = ['peer', 'sqlite', 'postgres'];
// The companion API does the same work on either database once a credential is cached, so its
// rows run on SQLite only; add 'postgres' here to see them there too.
const COMPANION_API: readonly TargetId[] = ['sqlite'];

const basic = ({ clientId, clientSecret }: ClientCredentials) =>
  `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')}`;
const FORM = 'application/x-www-form-urlencoded';

function formPost(path: string, client: ClientCredentials, params: Record<string, string>): Request {
  return { method: 'POST', path, headers: { 'content-type': FORM, authorization: basic(client) }, body: new URLSearchParams(params).toString() };
}

/** Sends `req` once with fetch, fails the run if the answer is not what the row is meant to measure. */
async function probe(origin: string, req: Request, check: (status: number, body: string) => boolean): Promise<string> {
  const res = await fetch(new URL(req.path ?? '/', origin), { method: req.method ?? 'GET', headers: req.headers, body: req.body, redirect: 'manual' });
  const body = await res.text();
  if (!check(res.status, body)) throw new Error(`${req.method ?? 'GET'} ${origin}${req.path} answered ${res.status}: ${body.slice(0, 300)}`);
  return body;
}

const isJwt = (token: unknown) => typeof token === 'string' && token.split('.').length === 3;

async function accessToken(fx: ServerFixtures, mode: TokenMode): Promise<string> {
  const body = await probe(fx.url, formPost('/oauth/token', fx.clients!.service, { grant_type: 'client_credentials', scope: 'read' }), (s) => s === 200);
  const token = (JSON.parse(body) as { access_token: string }).access_token;
  if (isJwt(token) !== (mode === 'jwt')) throw new Error(`expected a ${mode} access token from ${fx.url}`);
  return token;
}

const get = (path: string, headers: Record<string, string> = {}): Request => ({ method: 'GET', path, headers });

async function simple(origin: string, req: Request, check: (status: number, body: string) => boolean = (s) => s === 200): Promise<LoadPlan> {
  await probe(origin, req, check);
  return { origin, requests: [req] };
}

function verifyAt(origin: string | undefined, token: string): Promise<LoadPlan> {
  if (!origin) throw new Error('this target runs no companion API');
  return simple(origin, get('/v1/auth/verify', { authorization: `Bearer ${token}` }), (s, b) => s === 200 && b.includes('"authenticated":true'));
}

/** The token endpoint issuing an access token for the API to a service client. */
function clientCredentials(id: string, label: string, mode: TokenMode): Endpoint {
  return {
    id,
    label,
    mode,
    targets: AUTH_SERVERS,
    async prepare(fx) {
      await accessToken(fx, mode);
      return { origin: fx.url, requests: [formPost('/oauth/token', fx.clients!.service, { grant_type: 'client_credentials', scope: 'read' })] };
    },
  };
}

/** A credential the API must refuse: 401 is the expected answer, and counts as a success. */
async function refusedAt(origin: string | undefined, credential: string): Promise<LoadPlan> {
  if (!origin) throw new Error('this target runs no companion API');
  const plan = await simple(origin, get('/v1/auth/verify', { authorization: `Bearer ${credential}` }), (s) => s === 401);
  return { ...plan, expectStatus: 401 };
}

/**
 * The rows of the benchmark, in the order they run and print. Each runs against every target it
 * lists; add a row here and it is measured, reported and compared with no other change.
 */
export const endpoints: readonly Endpoint[] = [
  {
    id: 'hello',
    label: 'Koa hello world',
    mode: 'opaque',
    targets: ['H'],
    prepare: (fx) => simple(fx.url, get('/')),
  },
  {
    id: 'discovery',
    label: 'discovery',
    mode: 'opaque',
    targets: AUTH_SERVERS,
    servedFromMemory: true,
    prepare: (fx) => simple(fx.url, get('/.well-known/openid-configuration')),
  },
  {
    id: 'jwks',
    label: 'JWKS',
    mode: 'opaque',
    targets: AUTH_SERVERS,
    servedFromMemory: true,
    prepare: (fx) => simple(fx.url, get('/oauth/jwks')),
  },
  clientCredentials('cc-opaque', 'client_credentials (opaque)', 'opaque'),
  clientCredentials('cc-jwt', 'client_credentials (JWT ES256)', 'jwt'),
  {
    id: 'refresh',
    label: 'refresh_token (rotating)',
    mode: 'opaque',
    targets: AUTH_SERVERS,
    definition: 'Each refresh token is used once (rotation is on): every response hands the connection its next refresh token. The seed tokens come from complete authorization-code flows before the run, logged in as a second user whose password hash is cheap to check (scrypt N=2^10, not 2^15): seeding before every turn otherwise took well over half of the time of the row.',
    async prepare(fx) {
      const web = fx.clients!.web;
      const pool: string[] = [];
      const seed = async (count: number) => {
        for (let i = 0; i < count; i += 1) pool.push(String((await completeFlow(fx, fx.seedUser)).refresh_token));
      };
      await seed(1);
      const template = formPost('/oauth/token', web, { grant_type: 'refresh_token', refresh_token: pool[0]! });
      // The form, up to the token (which is base64url, the same encoded either way).
      const bodyBefore = 'grant_type=refresh_token&refresh_token=';
      return {
        origin: fx.url,
        // Tokens in flight when a run stops are lost; top the pool up to one per connection and some.
        beforeRun: () => seed(Math.max(0, 24 - pool.length)),
        rotating: { bodyBefore, field: 'refresh_token', take: () => pool.splice(0) },
        requests: [{
          ...template,
          setupRequest: (req) => ({ ...req, body: `${bodyBefore}${encodeURIComponent(pool.pop() ?? 'exhausted')}` }),
          onResponse(status, body) {
            if (status === 200) pool.push(String((JSON.parse(body) as { refresh_token: string }).refresh_token));
          },
        }],
      };
    },
  },
  {
    id: 'introspection',
    label: 'introspection (opaque)',
    mode: 'opaque',
    targets: AUTH_SERVERS,
    definition: 'A resource-server client introspects one live opaque client_credentials access token.',
    async prepare(fx) {
      const token = await accessToken(fx, 'opaque');
      const req = formPost('/oauth/introspect', fx.clients!.introspector, { token });
      return simple(fx.url, req, (s, b) => s === 200 && b.includes('"active":true'));
    },
  },
  {
    id: 'auth-code-flow',
    label: 'authorization-code flow',
    mode: 'opaque',
    targets: AUTH_SERVERS,
    definition: 'A complete flow per 8 requests, each flow with a new session: authorize, login page, login (scrypt password check), resume, consent page, consent, resume, code redemption. req/s counts requests; flows/s is in the notes.',
    async prepare(fx) {
      await completeFlow(fx);
      let flows = 0;
      const steps: Request[] = Array.from({ length: 8 }, (_, i) => ({
        method: 'GET',
        path: '/',
        setupRequest(req, context) {
          if (i === 0) context.flow = new AuthorizationCodeFlow(fx);
          const next = (context.flow as AuthorizationCodeFlow | undefined)?.next;
          // null: the flow went off script; autocannon starts the sequence over.
          return next ? { ...req, method: next.method, path: next.path, headers: next.headers, body: next.body } : null;
        },
        onResponse(status, body, context, headers) {
          const flow = context.flow as AuthorizationCodeFlow;
          flow.advance(status, headers, body);
          if (flow.tokens) flows += 1;
        },
      }));
      return {
        origin: fx.url,
        requests: steps,
        ok: (status) => status >= 200 && status < 400,
        resetSummary: () => {
          flows = 0;
        },
        indivisible: true,
        summary: (seconds) => `${(flows / seconds).toFixed(1)} flows/s`,
      };
    },
  },
  {
    id: 'api-jwt-cold',
    label: 'API verify: JWT, cold',
    mode: 'jwt',
    targets: COMPANION_API,
    companionApi: true,
    withoutAuthServer: true,
    definition: 'GET /v1/auth/verify with a JWT access token at a copy of the companion API whose credential cache is off: every request checks the ES256 signature and the claims (the JWKS is fetched once, as always).',
    prepare: async (fx) => verifyAt(fx.apiNoCacheUrl, await accessToken(fx, 'jwt')),
  },
  {
    id: 'api-jwt-cached',
    label: 'API verify: JWT, cached',
    mode: 'jwt',
    targets: COMPANION_API,
    companionApi: true,
    withoutAuthServer: true,
    definition: 'GET /v1/auth/verify with one JWT access token, verified once and then served from the credential cache.',
    prepare: async (fx) => verifyAt(fx.apiUrl, await accessToken(fx, 'jwt')),
  },
  {
    id: 'api-opaque-cached',
    label: 'API verify: opaque, cached',
    mode: 'opaque',
    targets: COMPANION_API,
    companionApi: true,
    definition: 'GET /v1/auth/verify with one opaque access token, introspected once and then cached (for VERIFICATION_CACHE_SECONDS, 30 s by default, longer than a run).',
    prepare: async (fx) => verifyAt(fx.apiUrl, await accessToken(fx, 'opaque')),
  },
  {
    id: 'api-key-hit',
    label: 'API verify: API key, hit',
    mode: 'opaque',
    targets: COMPANION_API,
    companionApi: true,
    withoutAuthServer: true,
    definition: 'GET /v1/auth/verify with an existing sk_live_ key: looked up once, then served from the key cache (usage is recorded in memory and written in batches).',
    prepare: async (fx) => verifyAt(fx.apiUrl, fx.apiKeys!.valid),
  },
  {
    id: 'api-key-miss',
    label: 'API verify: API key, miss',
    mode: 'opaque',
    targets: COMPANION_API,
    companionApi: true,
    withoutAuthServer: true,
    definition: 'GET /v1/auth/verify with an existing sk_live_ key at the copy of the companion API whose key cache is off: every request looks the key up in the database (one indexed query), checks it and records its use in memory.',
    prepare: async (fx) => verifyAt(fx.apiNoCacheUrl, fx.apiKeys!.valid),
  },
  {
    id: 'api-key-unknown',
    label: 'API verify: API key, unknown',
    mode: 'opaque',
    targets: COMPANION_API,
    companionApi: true,
    withoutAuthServer: true,
    definition: 'GET /v1/auth/verify with a well-formed key (valid checksum) that does not exist: every request looks it up in the database and answers 401.',
    prepare: (fx) => refusedAt(fx.apiUrl, fx.apiKeys!.unknown),
  },
  {
    id: 'api-key-bad-checksum',
    label: 'API verify: API key, bad checksum',
    mode: 'opaque',
    targets: COMPANION_API,
    companionApi: true,
    withoutAuthServer: true,
    definition: 'GET /v1/auth/verify with a key whose checksum does not match: refused with 401 before any lookup.',
    prepare: (fx) => refusedAt(fx.apiUrl, fx.apiKeys!.badChecksum),
  },
];
