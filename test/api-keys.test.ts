import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey } from '../src/api-keys/format.ts';
import { createApiKeyService } from '../src/api-keys/service.ts';
import { createApiKeyStore } from '../src/api-keys/store.ts';
import { createUsageRecorder } from '../src/api-keys/usage.ts';
import { createLogger } from '../src/logger.ts';
import { authorize, tokenRequest } from './flows.ts';
import { postgresAvailable, startApiServer, startAuthServer, tempPostgres, type TestApiServer, type TestAuthServer } from './harness.ts';

type Json = Record<string, any>;

const backends = [
  { name: 'SQLite', available: true, database: async () => ({ url: undefined, cleanup: async () => {} }) },
  { name: 'PostgreSQL', available: await postgresAvailable(), database: async () => tempPostgres() },
];

for (const backend of backends) {
  // API keys through both servers: created over HTTP with a person's OAuth token or another key,
  // used at the companion API, introspected at the authorization server.
  describe.skipIf(!backend.available)(`API keys on ${backend.name}`, () => {
    const cacheSeconds = 5;
    const redirectUri = 'http://127.0.0.1:8787/callback';
    let as: TestAuthServer;
    let api: TestApiServer;
    // A second API instance on the same database whose clock runs `offset` ms ahead: it sees keys
    // expire and caches lapse, while OAuth tokens at the main instance stay valid.
    let later: TestApiServer;
    let offset = 0;
    let manager: string; // a full-access key, which never expires: manages keys at `later`
    let app: { client_id: string; client_secret?: string };
    let alice: { id: string; email: string; password: string };
    let bob: { id: string; email: string; password: string };
    let aliceAdmin: string;
    let bobAdmin: string;

    let dropDatabase = async () => {};
    beforeAll(async () => {
      const database = await backend.database();
      dropDatabase = database.cleanup;
      as = await startAuthServer({ databaseUrl: database.url });
      // Usage is written when read (flush on GET) or at close, never by the timer during a test.
      api = await startApiServer(as, { config: { verificationCacheSeconds: cacheSeconds, apiKeyUsageFlushSeconds: 3600 } });
      later = await startApiServer(as, { config: { verificationCacheSeconds: cacheSeconds, apiKeyUsageFlushSeconds: 3600 }, now: () => Date.now() + offset });
      app = await as.createClient({ redirectUris: [redirectUri], scope: 'openid admin read read:users' });
      alice = await as.createUser({ name: 'Alice' });
      bob = await as.createUser({ name: 'Bob' });
      aliceAdmin = await userToken(alice, 'admin');
      bobAdmin = await userToken(bob, 'admin');
      manager = (await createKey(aliceAdmin, { name: 'Manager at the later instance' })).key;
    });
    afterAll(async () => {
      await later?.close();
      await api?.close();
      await as?.close({ removeDatabase: true });
      await dropDatabase();
    });

    async function userToken(user: { email: string; password: string }, scope: string): Promise<string> {
      const { redirect } = await authorize({ issuer: as.url, clientId: app.client_id, redirectUri, scope, email: user.email, password: user.password, state: 'st' });
      const { status, body } = await tokenRequest(as.url, { grant_type: 'authorization_code', code: redirect.searchParams.get('code')!, redirect_uri: redirectUri }, { basic: [app.client_id, app.client_secret!] });
      expect(status, JSON.stringify(body)).toBe(200);
      return String(body.access_token);
    }

    const call = async (path: string, credential?: string, init: { method?: string; body?: unknown; headers?: Record<string, string>; base?: string } = {}) => {
      const headers: Record<string, string> = { ...(credential ? { authorization: `Bearer ${credential}` } : {}), ...init.headers };
      if (init.body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(`${init.base ?? api.url}${path}`, { method: init.method ?? 'GET', headers, body: init.body === undefined ? undefined : JSON.stringify(init.body) });
      const text = await res.text();
      return { status: res.status, headers: res.headers, text, body: (text ? JSON.parse(text) : undefined) as Json };
    };
    const createKey = async (credential: string, body: Json) => {
      const r = await call('/api-keys', credential, { method: 'POST', body });
      expect(r.status, r.text).toBe(201);
      return r.body as Json & { id: string; key: string };
    };
    const expectError = (r: Awaited<ReturnType<typeof call>>, status: number, error: string) => {
      expect(r.status, r.text).toBe(status);
      expect(r.body).toMatchObject({ error, code: status, request_id: r.headers.get('x-request-id') });
      expect(r.body.message).toEqual(expect.any(String));
      if (status === 401 || status === 403) expect(r.headers.get('www-authenticate')).toMatch(/^Bearer realm="latchkey"/);
    };
    const events = async (id: string, credential = aliceAdmin, base = api.url) => {
      const r = await call(`/api-keys/${id}/events`, credential, { base });
      expect(r.status, r.text).toBe(200);
      return r.body.data as { type: string; ip: string | null; detail: Json | null }[];
    };

    describe('creating a key', () => {
      it('takes the guide\'s body as written and shows the secret once', async () => {
        const created = await createKey(aliceAdmin, { name: 'Production Key', scopes: ['read:users', 'write:projects'] });
        expect(created.key).toMatch(/^sk_test_[0-9A-Za-z]{38}$/);
        expect(created).toMatchObject({
          object: 'api_key', name: 'Production Key', environment: 'test', type: 'secret', prefix: 'sk_test_', last_four: created.key.slice(-4),
          scopes: ['read:users', 'write:projects'], full_access: false, status: 'active', expires_at: null, request_count: 0,
        });
        const later = [await call(`/api-keys/${created.id}`, aliceAdmin), await call('/api-keys', aliceAdmin), await call(`/api-keys/${created.id}/events`, aliceAdmin)];
        for (const r of later) {
          expect(r.status).toBe(200);
          expect(r.text).not.toContain(created.key);
        }
        expect(later[0]!.body).toMatchObject({ redacted_key: `sk_test_...${created.key.slice(-4)}` });
        expect(later[1]!.body.data.map((k: Json) => k.id)).toContain(created.id);
        expect((await events(created.id)).map((e) => e.type)).toEqual(['created']);
        const stored = JSON.stringify(await as.server.db.knex('api_key_secrets').select());
        expect(stored).not.toContain(created.key);
        expect([...as.logs, ...api.logs].join('\n')).not.toContain(created.key);
      });

      it('makes live keys and restricted rk_ keys', async () => {
        const live = await createKey(aliceAdmin, { name: 'Live', environment: 'live' });
        expect(live.key).toMatch(/^sk_live_/);
        expect(live).toMatchObject({ scopes: null, full_access: true, type: 'secret' });
        const restricted = await createKey(aliceAdmin, { name: 'Reporting', restricted: true, scopes: ['read:users'] });
        expect(restricted.key).toMatch(/^rk_test_/);
        expect(restricted.type).toBe('restricted');
      });

      it('answers bad input with 400 naming the field', async () => {
        const cases: [Json, RegExp][] = [
          [{ name: 'x', scopes: ['read:users', 'launch:rockets'] }, /scopes\.1/],
          [{ name: 'x', scopes: [] }, /scopes/],
          [{ name: 'x', restricted: true }, /scopes: a restricted key must list/],
          [{ name: 'x', expires_at: '2001-01-01T00:00:00Z' }, /expires_at: must be in the future/],
          [{ name: 'x', expires_at: 'next tuesday' }, /expires_at/],
          [{ name: 'x', ip_allowlist: ['203.0.113.0/24', '10.0.0.0/99'] }, /ip_allowlist: "10\.0\.0\.0\/99" is not/],
          [{ name: 'x', environment: 'staging' }, /environment/],
          [{ name: '' }, /name/],
          [{ name: 'x', colour: 'blue' }, /colour/],
        ];
        for (const [body, message] of cases) {
          const r = await call('/api-keys', aliceAdmin, { method: 'POST', body });
          expectError(r, 400, 'invalid_request');
          expect(r.body.message, JSON.stringify(body)).toMatch(message);
        }
        const notJson = await call('/api-keys', aliceAdmin, { method: 'POST', headers: { 'content-type': 'application/json' }, body: undefined });
        expectError(notJson, 400, 'invalid_request');
      });

      it('refuses control characters and answers malformed ids with 404, not a server error', async () => {
        const nul = await call('/api-keys', aliceAdmin, { method: 'POST', body: { name: 'null\u0000byte' } });
        expectError(nul, 400, 'invalid_request');
        expect(nul.body.message).toMatch(/name: must not contain control characters/);
        for (const [method, path] of [['GET', '/api-keys/a%00'], ['DELETE', '/api-keys/a%00'], ['POST', '/api-keys/a%00/roll'], ['GET', '/api-keys/key_%00/events'], ['GET', `/api-keys/key_${'f'.repeat(300)}`]] as const) {
          expectError(await call(path, aliceAdmin, { method }), 404, 'not_found');
        }
        const writer = await createKey(aliceAdmin, { name: 'Writer' });
        expectError(await call('/v1/users', writer.key, { method: 'POST', body: { email: 'nul@example.com', name: 'a\u0000b' } }), 400, 'invalid_request');
        expectError(await call('/v1/projects', writer.key, { method: 'POST', body: { name: 'p', description: 'a\u0000b' } }), 400, 'invalid_request');
      });
    });

    describe('using a key as the guide shows', () => {
      it('authenticates /v1/users and /v1/auth/verify, enforcing the key\'s scopes', async () => {
        const { key, id } = await createKey(aliceAdmin, { name: 'Reader', scopes: ['read:users'] });
        expect((await call('/v1/users', key)).status).toBe(200);
        const verify = await call('/v1/auth/verify', key);
        expect(verify.body).toEqual({
          authenticated: true, user_id: alice.id, client_id: null, scopes: ['read:users'], expires_at: null, auth_method: 'api_key', environment: 'test', key_id: id,
        });
        expect((await call('/v1/users/me', key)).body).toMatchObject({ id: alice.id, email: alice.email });
        const denied = await call('/v1/users', key, { method: 'POST', body: { email: 'new@example.com' } });
        expectError(denied, 403, 'insufficient_scope');
        expect(denied.headers.get('www-authenticate')).toMatch(/error="insufficient_scope".*scope="write:users write"/);
        const log = await events(id);
        expect(log.find((e) => e.type === 'rejected_scope')).toMatchObject({ ip: '127.0.0.1', detail: { path: '/v1/users', required_scopes: ['write:users', 'write'] } });
      });

      it('gives an sk_ key without scopes its owner\'s full access', async () => {
        const { key } = await createKey(aliceAdmin, { name: 'Everything' });
        const created = await call('/v1/projects', key, { method: 'POST', body: { name: 'Apollo' } });
        expect(created.status, created.text).toBe(201);
      });

      it('tells missing, unknown, mistyped and malformed keys apart', async () => {
        expectError(await call('/v1/users'), 401, 'missing_api_key');
        const unknown = await call('/v1/users', generateApiKey('sk', 'test').secret);
        expectError(unknown, 401, 'invalid_api_key');
        expect(unknown.body.message).toMatch(/unknown or has been revoked/);
        const { key } = await createKey(aliceAdmin, { name: 'Typo' });
        const typo = `${key.slice(0, 12)}${key[12] === 'a' ? 'b' : 'a'}${key.slice(13)}`;
        expect((await call('/v1/users', typo)).body.message).toMatch(/checksum/);
        for (const bad of ['sk_test_short', `${key}x`, 'rk_live_!!!']) expectError(await call('/v1/users', bad), 401, bad.includes('!') ? 'invalid_token' : 'invalid_api_key');
      });

      // Counted as Knex query events, which on SQLite miss the prepared-statement fast path; the
      // checksum is checked before the store is called at all, so one database proves it.
      it.skipIf(backend.name === 'SQLite')('rejects a mistyped key without touching the database', async () => {
        const { key } = await createKey(aliceAdmin, { name: 'Checksum' });
        const mistyped = `${key.slice(0, -1)}${key.endsWith('0') ? '1' : '0'}`;
        let queries = 0;
        const count = () => { queries += 1; };
        as.server.db.knex.on('query', count);
        try {
          expectError(await call('/v1/auth/verify', mistyped), 401, 'invalid_api_key');
        } finally {
          as.server.db.knex.removeListener('query', count);
        }
        expect(queries).toBe(0);
        // The same listener does see the lookup a well-formed unknown key needs.
        as.server.db.knex.on('query', count);
        try {
          expectError(await call('/v1/auth/verify', generateApiKey('sk', 'test').secret), 401, 'invalid_api_key');
        } finally {
          as.server.db.knex.removeListener('query', count);
        }
        expect(queries).toBe(1);
      });

      it('counts requests, records the last use and the first use from each address', async () => {
        const { key, id } = await createKey(aliceAdmin, { name: 'Counted' });
        for (let i = 0; i < 3; i += 1) expect((await call('/v1/auth/verify', key)).status).toBe(200);
        const shown = (await call(`/api-keys/${id}`, aliceAdmin)).body;
        expect(shown.request_count).toBe(3);
        expect(Date.parse(shown.last_used_at)).toBeGreaterThan(Date.parse(shown.created_at) - 1);
        expect((await events(id)).filter((e) => e.type === 'used_from_new_ip')).toEqual([expect.objectContaining({ ip: '127.0.0.1' })]);
        await call('/v1/auth/verify', key);
        expect((await events(id)).filter((e) => e.type === 'used_from_new_ip')).toHaveLength(1);
        expect((await call(`/api-keys/${id}`, aliceAdmin)).body.request_count).toBe(4);
      });
    });

    describe('expiry, rolling and revocation', () => {
      const atLater = { get base() { return later.url; } };

      it('answers an expired key with api_key_expired and logs the rejection', async () => {
        offset = 0;
        const { key, id } = await createKey(aliceAdmin, { name: 'Short-lived', expires_at: new Date(Date.now() + 3600_000).toISOString() });
        expect((await call('/v1/auth/verify', key, atLater)).status).toBe(200);
        offset = 2 * 3600_000;
        const r = await call('/v1/auth/verify', key, atLater);
        expectError(r, 401, 'api_key_expired');
        expect(r.body.message).toMatch(/expired at/);
        expect((await call(`/api-keys/${id}`, manager, atLater)).body.status).toBe('expired');
        expect((await events(id, manager, later.url)).map((e) => e.type)).toContain('rejected_expired');
      });

      it('rolls a key: the new secret works at once, the old one until its grace period ends', async () => {
        offset = 0;
        const { key: old, id } = await createKey(aliceAdmin, { name: 'Rolled' });
        expect((await call('/v1/auth/verify', old)).status).toBe(200);
        const rolled = await call(`/api-keys/${id}/roll`, aliceAdmin, { method: 'POST', body: { expires_in: 3600 } });
        expect(rolled.status, rolled.text).toBe(200);
        const fresh = rolled.body.key as string;
        expect(fresh).toMatch(/^sk_test_/);
        expect(fresh).not.toBe(old);
        expect(rolled.body).toMatchObject({ id, last_four: fresh.slice(-4), previous_key_expires_at: expect.any(String) });
        expect((await call('/v1/auth/verify', fresh)).body.key_id).toBe(id);
        expect((await call('/v1/auth/verify', old)).status).toBe(200);
        offset = 3600_000 + 1000;
        const late = await call('/v1/auth/verify', old, atLater);
        expectError(late, 401, 'api_key_expired');
        expect(late.body.message).toMatch(/rolled/);
        expect((await call('/v1/auth/verify', fresh, atLater)).status).toBe(200);
        expect((await events(id, manager, later.url)).map((e) => e.type)).toEqual(expect.arrayContaining(['created', 'rolled', 'rejected_expired']));
      });

      it('reads a roll body sent in chunks (no Content-Length)', async () => {
        const { key: old, id } = await createKey(aliceAdmin, { name: 'Chunked roll' });
        const body = new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode('{"expires_in": 3600}')); c.close(); } });
        const res = await fetch(`${api.url}/api-keys/${id}/roll`, {
          method: 'POST', headers: { authorization: `Bearer ${aliceAdmin}`, 'content-type': 'application/json' }, body, duplex: 'half',
        } as RequestInit);
        const rolled = (await res.json()) as Json;
        expect(res.status, JSON.stringify(rolled)).toBe(200);
        expect(rolled.previous_key_expires_at).toEqual(expect.any(String));
        expect((await call('/v1/auth/verify', old)).status).toBe(200);
      });

      it('rolls without a grace period: the old secret stops at once', async () => {
        const { key: old, id } = await createKey(aliceAdmin, { name: 'Rolled now' });
        expect((await call('/v1/auth/verify', old)).status).toBe(200);
        const rolled = await call(`/api-keys/${id}/roll`, aliceAdmin, { method: 'POST' });
        expect(rolled.status, rolled.text).toBe(200);
        expectError(await call('/v1/auth/verify', old), 401, 'invalid_api_key');
        expect((await call('/v1/auth/verify', rolled.body.key)).status).toBe(200);
        expectError(await call(`/api-keys/${id}/roll`, aliceAdmin, { method: 'POST', body: { expires_in: -5 } }), 400, 'invalid_request');
      });

      it('revokes a key: here at once, on another API instance within the cache bound', async () => {
        offset = 0;
        const { key, id } = await createKey(aliceAdmin, { name: 'Revoked' });
        expect((await call('/v1/auth/verify', key, atLater)).status).toBe(200);
        const revoked = await call(`/api-keys/${id}`, aliceAdmin, { method: 'DELETE' });
        expect(revoked.body).toMatchObject({ id, status: 'revoked', revoked_at: expect.any(String) });
        expectError(await call('/v1/auth/verify', key), 401, 'invalid_api_key');
        expect((await call('/v1/auth/verify', key, atLater)).status).toBe(200); // still cached there
        offset = cacheSeconds * 1000;
        expectError(await call('/v1/auth/verify', key, atLater), 401, 'invalid_api_key');
        expectError(await call(`/api-keys/${id}/roll`, aliceAdmin, { method: 'POST' }), 409, 'conflict');
        expect((await events(id)).map((e) => e.type)).toContain('revoked');
      });
    });

    describe('IP allowlists', () => {
      it('refuses a request from outside the allowlist, ignoring X-Forwarded-For from an untrusted peer', async () => {
        const { key, id } = await createKey(aliceAdmin, { name: 'Office only', ip_allowlist: ['203.0.113.0/24', '2001:db8::/32'] });
        const r = await call('/v1/auth/verify', key, { headers: { 'x-forwarded-for': '203.0.113.7' } });
        expectError(r, 403, 'forbidden');
        expect(r.body.message).toMatch(/127\.0\.0\.1.*allowlist/);
        expect((await events(id)).find((e) => e.type === 'rejected_ip')).toMatchObject({ ip: '127.0.0.1' });
        const local = await createKey(aliceAdmin, { name: 'Local', ip_allowlist: ['127.0.0.0/8'] });
        expect((await call('/v1/auth/verify', local.key)).status).toBe(200);
      });

      it('believes X-Forwarded-For from a configured trusted proxy', async () => {
        const proxied = await startApiServer(as, { config: { trustedProxies: ['127.0.0.1'], trustProxy: true } });
        let open: { id: string; key: string } | undefined;
        try {
          const { key } = await createKey(aliceAdmin, { name: 'Behind a proxy', ip_allowlist: ['203.0.113.0/24'] });
          expect((await call('/v1/auth/verify', key, { base: proxied.url, headers: { 'x-forwarded-for': '203.0.113.7' } })).status).toBe(200);
          const outside = await call('/v1/auth/verify', key, { base: proxied.url, headers: { 'x-forwarded-for': '198.51.100.1' } });
          expectError(outside, 403, 'forbidden');
          expect(outside.body.message).toMatch(/198\.51\.100\.1/);
          // A client cannot prepend an address: only the hop the trusted proxy saw counts.
          expectError(await call('/v1/auth/verify', key, { base: proxied.url, headers: { 'x-forwarded-for': '203.0.113.7, 198.51.100.1' } }), 403, 'forbidden');
          // Junk from the proxy is no address: the proxy's own address counts.
          open = await createKey(aliceAdmin, { name: 'Open' });
          expect((await call('/v1/auth/verify', open.key, { base: proxied.url, headers: { 'x-forwarded-for': 'x'.repeat(70) } })).status).toBe(200);
          expectError(await call('/v1/auth/verify', key, { base: proxied.url, headers: { 'x-forwarded-for': 'not-an-address' } }), 403, 'forbidden');
        } finally {
          await proxied.close();
        }
        // Closing wrote that instance's usage: the junk was recorded as the proxy's address.
        expect((await events(open!.id)).filter((e) => e.type === 'used_from_new_ip').map((e) => e.ip)).toEqual(['127.0.0.1']);
      });
    });

    describe('sandbox and live data', () => {
      it('keeps test and live data apart', async () => {
        const test = await createKey(aliceAdmin, { name: 'T' });
        const live = await createKey(aliceAdmin, { name: 'L', environment: 'live' });
        const made = await call('/v1/users', test.key, { method: 'POST', body: { email: 'sandbox-only@example.com' } });
        expect(made.status, made.text).toBe(201);
        const emails = async (credential: string) => ((await call('/v1/users?limit=100', credential)).body.data as Json[]).map((u) => u.email);
        expect(await emails(test.key)).toContain('sandbox-only@example.com');
        expect(await emails(live.key)).not.toContain('sandbox-only@example.com');
        expect(await emails(await userToken(alice, 'read:users'))).not.toContain('sandbox-only@example.com');
        expectError(await call(`/v1/users/${made.body.id}`, live.key), 404, 'not_found');
      });
    });

    describe('who may manage keys', () => {
      it('hides one account\'s keys from another: list, read, roll, revoke and events are all 404', async () => {
        const { id, key } = await createKey(aliceAdmin, { name: 'Alice\'s' });
        expect(((await call('/api-keys', bobAdmin)).body.data as Json[]).map((k) => k.id)).not.toContain(id);
        expectError(await call(`/api-keys/${id}`, bobAdmin), 404, 'not_found');
        expectError(await call(`/api-keys/${id}/events`, bobAdmin), 404, 'not_found');
        expectError(await call(`/api-keys/${id}/roll`, bobAdmin, { method: 'POST' }), 404, 'not_found');
        expectError(await call(`/api-keys/${id}`, bobAdmin, { method: 'DELETE' }), 404, 'not_found');
        const bobsKey = await createKey(bobAdmin, { name: 'Bob\'s' });
        expectError(await call(`/api-keys/${id}`, bobsKey.key, { method: 'DELETE' }), 404, 'not_found');
        expect((await call('/v1/auth/verify', key)).status).toBe(200);
      });

      it('lets a full-access sk_ key manage keys of its own environment only', async () => {
        const { key } = await createKey(aliceAdmin, { name: 'Manager' });
        const made = await createKey(key, { name: 'Made by a key' });
        expect(made.key).toMatch(/^sk_test_/);
        expectError(await call('/api-keys', key, { method: 'POST', body: { name: 'x', environment: 'live' } }), 403, 'forbidden');
        const listed = (await call('/api-keys', key)).body.data as Json[];
        expect(listed.every((k) => k.environment === 'test')).toBe(true);
        const live = await createKey(aliceAdmin, { name: 'Live one', environment: 'live' });
        expectError(await call(`/api-keys/${live.id}`, key), 404, 'not_found');
        const liveManager = await createKey(aliceAdmin, { name: 'Live manager', environment: 'live' });
        expect((await createKey(liveManager.key, { name: 'Live child' })).key).toMatch(/^sk_live_/);
      });

      it('passes a creating key\'s expiry and allowlist on: a key cannot make a key with fewer limits', async () => {
        const expiresAt = new Date(Date.now() + 86_400_000).toISOString();
        const maker = await createKey(aliceAdmin, { name: 'Fenced maker', expires_at: expiresAt, ip_allowlist: ['127.0.0.0/8'] });
        const child = await createKey(maker.key, { name: 'Child' });
        expect(child.ip_allowlist).toEqual(['127.0.0.0/8']);
        expect(Date.parse(child.expires_at)).toBe(Date.parse(expiresAt));
        const narrower = await createKey(maker.key, { name: 'Narrower', ip_allowlist: ['127.0.0.1'], expires_at: new Date(Date.now() + 3600_000).toISOString() });
        expect(narrower.ip_allowlist).toEqual(['127.0.0.1/32']);
        for (const body of [
          { name: 'Later', expires_at: new Date(Date.now() + 2 * 86_400_000).toISOString() },
          { name: 'Wider', ip_allowlist: ['0.0.0.0/0'] },
          { name: 'Elsewhere', ip_allowlist: ['203.0.113.0/24'] },
          { name: 'Anywhere', ip_allowlist: [] },
        ]) {
          const r = await call('/api-keys', maker.key, { method: 'POST', body });
          expectError(r, 403, 'forbidden');
          expect(r.body.message).toMatch(/expires_at|ip_allowlist/);
        }
        // A person's token sets any limits it likes.
        expect((await createKey(aliceAdmin, { name: 'Unfenced' })).ip_allowlist).toBeNull();
      });

      it('refuses restricted keys, keys without admin, tokens without admin and client-credentials tokens', async () => {
        const rk = await createKey(aliceAdmin, { name: 'rk admin', restricted: true, scopes: ['admin'] });
        expectError(await call('/api-keys', rk.key), 403, 'forbidden');
        const scoped = await createKey(aliceAdmin, { name: 'scoped', scopes: ['read:users'] });
        const r = await call('/api-keys', scoped.key);
        expectError(r, 403, 'insufficient_scope');
        expect(r.headers.get('www-authenticate')).toMatch(/scope="admin"/);
        expectError(await call('/api-keys', await userToken(alice, 'read:users')), 403, 'insufficient_scope');
        const machine = await as.createClient({ grantTypes: ['client_credentials'], redirectUris: [], scope: 'admin' });
        const { body } = await tokenRequest(as.url, { grant_type: 'client_credentials', scope: 'admin' }, { basic: [machine.client_id, machine.client_secret!] });
        const noUser = await call('/api-keys', String(body.access_token));
        expectError(noUser, 403, 'forbidden');
        expect(noUser.body.message).toMatch(/client credentials/);
        expectError(await call('/api-keys'), 401, 'missing_api_key');
      });
    });

    describe('introspection at the authorization server', () => {
      const introspect = async (token: string, client: { client_id: string; client_secret?: string }) => {
        const res = await fetch(`${as.url}/oauth/introspect`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}` },
          body: new URLSearchParams({ token }),
        });
        expect(res.status).toBe(200);
        return (await res.json()) as Json;
      };

      it('describes a key to a resource server, and to nobody else', async () => {
        const resourceServer = await as.createClient({ grantTypes: ['client_credentials'], redirectUris: [], scope: 'openid', resourceServer: true });
        const expiresAt = new Date(Date.now() + 86_400_000);
        const { key, id } = await createKey(aliceAdmin, { name: 'Introspected', scopes: ['read:users'], expires_at: expiresAt.toISOString(), environment: 'live' });
        expect(await introspect(key, resourceServer)).toEqual({
          active: true, token_type: 'api_key', scope: 'read:users', sub: alice.id, environment: 'live', restricted: false, key_id: id,
          iat: expect.any(Number), exp: Math.floor(expiresAt.getTime() / 1000), iss: as.url,
        });
        expect(await introspect(key, app)).toEqual({ active: false });
        // The last character changed (to another one: a key may end in x already).
        expect(await introspect(`${key.slice(0, -1)}${key.endsWith('x') ? 'y' : 'x'}`, resourceServer)).toEqual({ active: false });
        await call(`/api-keys/${id}`, aliceAdmin, { method: 'DELETE' });
        expect(await introspect(key, resourceServer)).toEqual({ active: false });
      });
    });
  });

  describe.skipIf(!backend.available)(`API key usage on ${backend.name} when a row cannot be written`, () => {
    it('keeps retrying through a passing failure, then writes key by key and drops only what fails', async () => {
      const database = await backend.database();
      const as = await startAuthServer({ databaseUrl: database.url });
      try {
        const lines: string[] = [];
        const store = createApiKeyStore(as.server.db.knex);
        const usage = createUsageRecorder(store, createLogger('error', {}, (line) => lines.push(line)), { flushSeconds: 3600 });
        const owner = await as.createUser();
        const { key } = await createApiKeyService(store).create({ userId: owner.id, name: 'real', environment: 'test', restricted: false });
        usage.used(key.id, '127.0.0.1', Date.now());
        usage.used('key_00000000000000000000000000000000', '127.0.0.1', Date.now()); // no such key: its rows break the batch
        await usage.flush();
        await usage.flush();
        expect((await store.find(owner.id, key.id))!.requestCount).toBe(0); // held for another try, not lost
        await usage.flush();
        expect((await store.find(owner.id, key.id))!.requestCount).toBe(1);
        expect(lines.filter((l) => l.includes('will retry'))).toHaveLength(2);
        expect(lines.some((l) => l.includes('dropped API key usage') && l.includes('key_00000000000000000000000000000000'))).toBe(true);
        await usage.close();
      } finally {
        await as.close({ removeDatabase: true });
        await database.cleanup();
      }
    });
  });
}
