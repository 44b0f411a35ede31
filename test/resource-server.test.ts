import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError } from '../src/errors.ts';
import type { CredentialVerifier } from '../src/verification/types.ts';
import { authorize, tokenRequest } from './flows.ts';
import { startApiServer, startAuthServer, type TestApiServer, type TestAuthServer } from './harness.ts';

// The companion API with opaque access tokens (the default), verified by introspection.
describe('the companion API with opaque access tokens', () => {
  const cacheSeconds = 5;
  let as: TestAuthServer;
  let api: TestApiServer;
  let offset = 0; // the API's clock runs `offset` ms ahead of the real one
  let user: { id: string; email: string; password: string };
  let app: { client_id: string; client_secret?: string; redirect_uris: string[] };
  let machine: { client_id: string; client_secret?: string };
  const redirectUri = 'http://127.0.0.1:8787/callback';

  beforeAll(async () => {
    as = await startAuthServer();
    api = await startApiServer(as, { config: { verificationCacheSeconds: cacheSeconds }, now: () => Date.now() + offset });
    user = await as.createUser({ name: 'Ada' });
    app = await as.createClient({ redirectUris: [redirectUri], scope: 'openid offline_access read write read:users' });
    machine = await as.createClient({
      grantTypes: ['client_credentials'],
      redirectUris: [],
      scope: 'read write delete admin admin:all read:users write:users delete:users read:projects write:projects',
    });
  });
  afterAll(async () => {
    await api?.close();
    await as?.close({ removeDatabase: true });
  });

  const clientToken = async (scope?: string): Promise<string> => {
    const { status, body } = await tokenRequest(as.url, { grant_type: 'client_credentials', ...(scope ? { scope } : {}) }, { basic: [machine.client_id, machine.client_secret!] });
    expect(status, JSON.stringify(body)).toBe(200);
    return String(body.access_token);
  };
  const userTokens = async (scope = 'read write read:users') => {
    const { redirect } = await authorize({ issuer: as.url, clientId: app.client_id, redirectUri, scope, email: user.email, password: user.password, state: 's' });
    const { status, body } = await tokenRequest(as.url, { grant_type: 'authorization_code', code: redirect.searchParams.get('code')!, redirect_uri: redirectUri }, { basic: [app.client_id, app.client_secret!] });
    expect(status, JSON.stringify(body)).toBe(200);
    return { access: String(body.access_token), refresh: body.refresh_token as string | undefined };
  };
  const call = async (path: string, token?: string, init: RequestInit & { headers?: Record<string, string> } = {}) => {
    const sentAt = Date.now();
    const res = await fetch(`${api.url}${path}`, { ...init, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...init.headers } });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: (text ? JSON.parse(text) : undefined) as Record<string, any>, sentAt, receivedAt: Date.now() };
  };
  const json = (method: string, body: unknown): RequestInit & { headers: Record<string, string> } => ({
    method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  const expectGuideError = (r: Awaited<ReturnType<typeof call>>, status: number, error: string) => {
    expect(r.status, JSON.stringify(r.body)).toBe(status);
    expect(r.body).toMatchObject({ error, code: status });
    expect(r.body.message).toEqual(expect.any(String));
    expect(r.body.request_id).toBe(r.headers.get('x-request-id'));
    expect(new Date(r.body.timestamp).toISOString()).toBe(r.body.timestamp);
    // When the error happened (errors share a timestamp within one millisecond, not longer).
    expect(Date.parse(r.body.timestamp)).toBeGreaterThanOrEqual(r.sentAt);
    expect(Date.parse(r.body.timestamp)).toBeLessThanOrEqual(r.receivedAt);
  };

  describe('tokens from each grant', () => {
    it('accepts a client-credentials token at /v1/auth/verify and /v2/auth/test, with no user', async () => {
      const token = await clientToken('read write');
      for (const path of ['/v1/auth/verify', '/v2/auth/test']) {
        const r = await call(path, token);
        expect(r.status).toBe(200);
        expect(r.body).toEqual({
          authenticated: true, user_id: null, client_id: machine.client_id, scopes: ['read', 'write'], expires_at: expect.any(String), auth_method: 'oauth',
        });
        const expiresIn = (Date.parse(r.body.expires_at) - Date.now()) / 1000;
        expect(expiresIn).toBeGreaterThan(3000); // an hour's token, not a cache bound
        expect(r.headers.get('x-request-id')).toMatch(/^req_[0-9a-f]{24}$/);
      }
    });

    it('accepts an authorization-code token, naming its user, and /v1/users/me describes that user', async () => {
      const { access } = await userTokens();
      const verify = await call('/v1/auth/verify', access);
      expect(verify.status).toBe(200);
      expect(verify.body).toMatchObject({ user_id: user.id, client_id: app.client_id, scopes: ['read', 'write', 'read:users'], auth_method: 'oauth' });
      const me = await call('/v1/users/me', access);
      expect(me.status).toBe(200);
      expect(me.body).toEqual({ id: user.id, email: user.email, name: 'Ada', created_at: expect.any(String) });
    });

    it('accepts the access token from a refresh, and refuses the refresh token itself as a bearer token', async () => {
      const { refresh } = await userTokens();
      const { body } = await tokenRequest(as.url, { grant_type: 'refresh_token', refresh_token: refresh! }, { basic: [app.client_id, app.client_secret!] });
      expect((await call('/v1/auth/verify', String(body.access_token))).body.user_id).toBe(user.id);
      expectGuideError(await call('/v1/auth/verify', String(body.refresh_token)), 401, 'invalid_token');
    });

    it('refuses /v1/users/me for a token that acts for no user', async () => {
      expectGuideError(await call('/v1/users/me', await clientToken('read')), 403, 'forbidden');
    });

    it('refuses a token issued for another audience (userinfo only)', async () => {
      const { access } = await userTokens('openid');
      const r = await call('/v1/auth/verify', access);
      expectGuideError(r, 401, 'invalid_token');
      expect(r.body.message).toMatch(/audience/);
    });
  });

  describe('bad credentials', () => {
    it('answers a request without credentials with missing_api_key', async () => {
      const r = await call('/v1/users');
      expectGuideError(r, 401, 'missing_api_key');
      expect(r.body.message).toMatch(/Authorization header/);
      expect(r.headers.get('www-authenticate')).toBe('Bearer realm="latchkey"');
    });

    it('answers another scheme with missing_api_key and junk with invalid_token', async () => {
      expectGuideError(await call('/v1/users', undefined, { headers: { authorization: 'Basic dXNlcjpwYXNz' } }), 401, 'missing_api_key');
      for (const junk of ['Bearer ', 'Bearer a b', 'Bearer not-a-real-token-at-all-1234567890']) {
        const r = await call('/v1/users', undefined, { headers: { authorization: junk } });
        expectGuideError(r, 401, 'invalid_token');
        expect(r.headers.get('www-authenticate')).toMatch(/^Bearer realm="latchkey", error="invalid_token", error_description="[^"]+"$/);
      }
    });

    it('refuses a token in the query string, even a valid one', async () => {
      const token = await clientToken('read');
      const r = await call(`/v1/auth/verify?access_token=${token}`);
      expectGuideError(r, 400, 'invalid_request');
      expect(r.body.message).toMatch(/query string/);
      expect(api.logs.join('\n')).not.toContain(token);
    });

    it('refuses a revoked token once the cache bound has passed', async () => {
      const token = await clientToken('read');
      expect((await call('/v1/auth/verify', token)).status).toBe(200);
      const revoke = await fetch(`${as.url}/oauth/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${machine.client_id}:${machine.client_secret}`).toString('base64')}` },
        body: new URLSearchParams({ token }),
      });
      expect(revoke.status).toBe(200);
      offset += cacheSeconds * 1000;
      expectGuideError(await call('/v1/auth/verify', token), 401, 'invalid_token');
    });

    it('answers an expired token with token_expired, cached or not', async () => {
      const cached = await clientToken('read');
      expect((await call('/v1/auth/verify', cached)).status).toBe(200);
      const fresh = await clientToken('read');
      offset += 2 * 3600 * 1000;
      try {
        expectGuideError(await call('/v1/auth/verify', cached), 401, 'token_expired');
        const r = await call('/v1/auth/verify', fresh);
        expectGuideError(r, 401, 'token_expired');
        expect(r.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);
      } finally {
        offset -= 2 * 3600 * 1000;
      }
    });
  });

  describe('every route\'s scope rule', () => {
    // The issue's table, written out independently of src/resource-server/routes.ts.
    const rules: [method: string, path: string, accepted: string[]][] = [
      ['GET', '/v1/users', ['read:users', 'read']],
      ['GET', '/v1/users/:id', ['read:users', 'read']],
      ['POST', '/v1/users', ['write:users', 'write']],
      ['PATCH', '/v1/users/:id', ['write:users', 'write']],
      ['DELETE', '/v1/users/:id', ['delete:users', 'delete']],
      ['GET', '/v1/projects', ['read:projects', 'read']],
      ['POST', '/v1/projects', ['write:projects', 'write']],
    ];
    const allScopes = ['read', 'write', 'delete', 'read:users', 'write:users', 'delete:users', 'read:projects', 'write:projects', 'admin', 'admin:all'];
    let tokens: Map<string, string>;
    let counter = 0;

    beforeAll(async () => {
      tokens = new Map(await Promise.all(allScopes.map(async (s) => [s, await clientToken(s)] as const)));
    });

    const request = async (method: string, path: string, token: string) => {
      counter += 1;
      let target = path;
      if (path.includes(':id')) {
        const created = await call('/v1/users', tokens.get('admin'), json('POST', { email: `rule${counter}@example.com` }));
        target = path.replace(':id', created.body.id);
      }
      const body = method === 'POST' && path === '/v1/projects' ? { name: `p${counter}` }
        : method === 'POST' ? { email: `new${counter}@example.com` }
        : method === 'PATCH' ? { name: 'Renamed' } : undefined;
      return call(target, token, body ? json(method, body) : { method });
    };

    for (const [method, path, accepted] of rules) {
      it(`${method} ${path} accepts ${accepted.join(' or ')}, admin or admin:all, and nothing else`, async () => {
        for (const scope of allScopes) {
          const r = await request(method, path, tokens.get(scope)!);
          if (accepted.includes(scope) || scope === 'admin' || scope === 'admin:all') {
            expect(r.status, `${scope}: ${JSON.stringify(r.body)}`).toBeLessThan(300);
          } else {
            expectGuideError(r, 403, 'insufficient_scope');
            const header = r.headers.get('www-authenticate')!;
            expect(header).toMatch(/^Bearer realm="latchkey", error="insufficient_scope", error_description="[^"]+", scope="[^"]+"$/);
            expect(header).toContain(`scope="${accepted.join(' ')}"`);
          }
        }
      });
    }

    it('lets any valid token call /v1/auth/verify, and a token without scopes nothing else', async () => {
      const none = await clientToken();
      expect((await call('/v1/auth/verify', none)).body.scopes).toEqual([]);
      expectGuideError(await call('/v1/users', none), 403, 'insufficient_scope');
    });
  });

  describe('users and projects', () => {
    let admin: string;
    beforeAll(async () => {
      admin = await clientToken('admin');
    });

    it('creates, reads, lists, updates and deletes a user', async () => {
      const created = await call('/v1/users', admin, json('POST', { email: 'Grace@Example.com', name: 'Grace' }));
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({ id: expect.stringMatching(/^au_/), email: 'grace@example.com', name: 'Grace' });
      const { id } = created.body;
      expect((await call(`/v1/users/${id}`, admin)).body).toEqual(created.body);
      expect((await call('/v1/users?limit=100', admin)).body.data.map((u: { id: string }) => u.id)).toContain(id);
      const patched = await call(`/v1/users/${id}`, admin, json('PATCH', { name: 'Grace Hopper' }));
      expect(patched.body).toMatchObject({ id, email: 'grace@example.com', name: 'Grace Hopper' });
      expect((await call(`/v1/users/${id}`, admin, { method: 'DELETE' })).status).toBe(204);
      expectGuideError(await call(`/v1/users/${id}`, admin), 404, 'not_found');
      expectGuideError(await call(`/v1/users/${id}`, admin, { method: 'DELETE' }), 404, 'not_found');
    });

    it('answers bad input with 400 invalid_request naming the field', async () => {
      const cases: [RequestInit & { headers?: Record<string, string> }, RegExp][] = [
        [json('POST', { email: 'not-an-email' }), /email/],
        [json('POST', { email: 'x@example.com', role: 'boss' }), /role/],
        [json('POST', {}), /email/],
        [json('POST', { email: 'y@example.com', name: 42 }), /name/],
        [{ method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"email":' }, /not valid JSON/],
        [{ method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'email=a@b.c' }, /JSON/],
      ];
      for (const [init, message] of cases) {
        const r = await call('/v1/users', admin, init);
        expectGuideError(r, 400, 'invalid_request');
        expect(r.body.message).toMatch(message);
      }
      const id = (await call('/v1/users', admin, json('POST', { email: 'z@example.com' }))).body.id;
      const empty = await call(`/v1/users/${id}`, admin, json('PATCH', {}));
      expectGuideError(empty, 400, 'invalid_request');
      expectGuideError(await call('/v1/users?limit=1000', admin), 400, 'invalid_request');
      expectGuideError(await call('/v1/projects', admin, json('POST', { name: '' })), 400, 'invalid_request');
    });

    it('refuses a second user with the same email with 409 conflict', async () => {
      expect((await call('/v1/users', admin, json('POST', { email: 'twice@example.com' }))).status).toBe(201);
      expectGuideError(await call('/v1/users', admin, json('POST', { email: 'TWICE@example.com' })), 409, 'conflict');
    });

    it('creates and lists projects', async () => {
      const created = await call('/v1/projects', admin, json('POST', { name: 'Apollo', description: 'to the moon' }));
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({ id: expect.stringMatching(/^prj_/), name: 'Apollo', description: 'to the moon' });
      expect((await call('/v1/projects', admin)).body.data).toContainEqual(created.body);
    });

    it('keeps sandbox (test) data out of reach of OAuth tokens, which act on live data', async () => {
      const now = Date.now();
      const id = 'au_0123456789abcdef0123456789abcdef';
      await as.server.db.knex('api_users').insert({ id, environment: 'test', email: 'sandbox@example.com', name: null, created_by: 'test', created_at: now, updated_at: now });
      expectGuideError(await call(`/v1/users/${id}`, admin), 404, 'not_found');
      expect((await call('/v1/users?limit=100', admin)).body.data.map((u: { id: string }) => u.id)).not.toContain(id);
      expectGuideError(await call(`/v1/users/${id}`, admin, { method: 'DELETE' }), 404, 'not_found');
      expect(await as.server.db.knex('api_users').where({ id }).first()).toBeDefined();
    });
  });

  describe('request ids, methods and logs', () => {
    it('echoes a well-formed X-Request-ID into the header, the error body and the log line', async () => {
      const r = await call('/v1/users', undefined, { headers: { 'x-request-id': 'trace-42.abc' } });
      expect(r.headers.get('x-request-id')).toBe('trace-42.abc');
      expect(r.body.request_id).toBe('trace-42.abc');
      expect(api.logs.some((line) => JSON.parse(line).request_id === 'trace-42.abc')).toBe(true);
    });

    it('replaces a malformed or oversized X-Request-ID with its own', async () => {
      for (const given of ['has spaces in it', 'x'.repeat(129), '<script>']) {
        const r = await call('/v1/users', undefined, { headers: { 'x-request-id': given } });
        expect(r.headers.get('x-request-id')).toMatch(/^req_[0-9a-f]{24}$/);
        expect(r.body.request_id).toBe(r.headers.get('x-request-id'));
      }
    });

    it('answers an unknown path with 404 and a wrong method with 405, in the same error format', async () => {
      expectGuideError(await call('/v1/nothing-here'), 404, 'not_found');
      const r = await call('/v1/projects', undefined, { method: 'DELETE' });
      expectGuideError(r, 405, 'method_not_allowed');
      expect(r.headers.get('allow')).toBe('HEAD, GET, POST');
      const options = await call('/v1/projects', undefined, { method: 'OPTIONS' });
      expect(options.status).toBe(204);
      expect(options.headers.get('allow')).toBe('HEAD, GET, POST');
      expectGuideError(await call('/v1/nothing-here', undefined, { method: 'OPTIONS' }), 404, 'not_found');
    });

    it('answers HEAD like GET without a body, and ignores a trailing slash', async () => {
      const token = await clientToken('read');
      const get = await call('/v1/auth/verify', token);
      const head = await call('/v1/auth/verify', token, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.body).toBeUndefined();
      expect(head.headers.get('content-type')).toBe('application/json; charset=utf-8');
      expect(Number(head.headers.get('content-length'))).toBe(Buffer.byteLength(JSON.stringify(get.body)));
      expect(head.headers.get('cache-control')).toBe('no-store');
      expect((await call('/v1/auth/verify/', token)).body).toEqual(get.body);
      const refused = await call('/v1/auth/verify', undefined, { method: 'HEAD' });
      expect(refused.status).toBe(401);
      expect(refused.body).toBeUndefined();
      expect(refused.headers.get('www-authenticate')).toBe('Bearer realm="latchkey"');
    });

    it('never writes a token to its logs', async () => {
      const token = await clientToken('read');
      await call('/v1/auth/verify', token);
      await call('/v1/auth/verify?x=1', `${token}x`);
      expect(api.logs.length).toBeGreaterThan(0);
      expect(api.logs.join('\n')).not.toContain(token);
    });
  });
});

// What Koa's request handling used to catch: an answer that cannot even be written.
describe('the companion API when an answer cannot be written', () => {
  let as: TestAuthServer;
  let api: TestApiServer;
  // A verifier whose refusal carries a header value Node refuses to send (a response-splitting attempt).
  const unwritable: CredentialVerifier = {
    claims: (credential) => credential.startsWith('broken'),
    verify(credential) {
      const error = new ApiError('rate_limit_exceeded', 'slow down', undefined, { 'Retry-After': '1\r\nX-Injected: yes' });
      if (credential === 'broken-async') return Promise.reject(error);
      throw error;
    },
  };

  beforeAll(async () => {
    as = await startAuthServer();
    api = await startApiServer(as, { verifiers: [unwritable] });
  });
  afterAll(async () => {
    await api?.close();
    await as?.close({ removeDatabase: true });
  });

  it.each(['broken-sync', 'broken-async'])('answers the guide\'s 500, logs it, and keeps serving (%s)', async (credential) => {
    const r = await fetch(`${api.url}/v1/auth/verify`, { headers: { authorization: `Bearer ${credential}` } });
    expect(r.status).toBe(500);
    expect(r.headers.get('x-injected')).toBeNull();
    expect(r.headers.get('retry-after')).toBeNull();
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(await r.json()).toEqual({
      error: 'server_error',
      message: 'An unexpected error occurred; it has been logged.',
      code: 500,
      request_id: r.headers.get('x-request-id'),
      timestamp: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T/),
    });
    expect(api.logs.some((line) => line.includes('unhandled error'))).toBe(true);
    const next = await fetch(`${api.url}/v1/auth/verify`);
    expect(next.status).toBe(401);
  });
});
