import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorize, tokenRequest } from './flows.ts';
import { startApiServer, startAuthServer, type TestApiServer, type TestAuthServer } from './harness.ts';

// JWT access tokens (RFC 9068), verified locally against the authorization server's JWKS.
describe('the companion API with JWT access tokens', () => {
  let as: TestAuthServer;
  let api: TestApiServer;
  let offset = 0;
  let machine: { client_id: string; client_secret?: string };
  let signingKey: JWK;

  beforeAll(async () => {
    as = await startAuthServer({ env: { JWT_ACCESS_TOKENS: 'true' } });
    api = await startApiServer(as, { now: () => Date.now() + offset });
    machine = await as.createClient({ grantTypes: ['client_credentials'], redirectUris: [], scope: 'read write' });
    const row: { private_jwk: string } = await as.server.db.knex('signing_keys').first('private_jwk').where({ alg: 'ES256' }).whereNull('retired_at');
    signingKey = JSON.parse(row.private_jwk) as JWK;
  });
  afterAll(async () => {
    await api?.close();
    await as?.close({ removeDatabase: true });
  });

  const clientToken = async (scope = 'read') => {
    const { status, body } = await tokenRequest(as.url, { grant_type: 'client_credentials', scope }, { basic: [machine.client_id, machine.client_secret!] });
    expect(status, JSON.stringify(body)).toBe(200);
    return String(body.access_token);
  };
  const verify = async (token: string) => {
    const res = await fetch(`${api.url}/v1/auth/verify`, { headers: { authorization: `Bearer ${token}` } });
    return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, any> };
  };
  const expectInvalid = async (token: string, message?: RegExp) => {
    const r = await verify(token);
    expect(r.status, JSON.stringify(r.body)).toBe(401);
    expect(r.body).toMatchObject({ error: 'invalid_token', code: 401 });
    expect(r.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);
    if (message) expect(r.body.message).toMatch(message);
  };
  /** A token shaped like the server's, signed with `key` (the server's own key unless given). */
  const forge = async (claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}, key: JWK = signingKey) => {
    const now = Math.floor(Date.now() / 1000);
    const payload = {
      iss: as.url, aud: as.config.apiAudience, sub: machine.client_id, client_id: machine.client_id, iat: now, exp: now + 600, jti: randomUUID(), scope: 'read', ...claims,
    };
    return new SignJWT(payload).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: key.kid, ...header }).sign(await importJWK(key, 'ES256'));
  };

  it('issues a JWT for the API and accepts it, reporting auth_method jwt and no user', async () => {
    const token = await clientToken('read write');
    const [header] = token.split('.');
    expect(JSON.parse(Buffer.from(header!, 'base64url').toString())).toMatchObject({ typ: 'at+jwt', alg: 'ES256' });
    for (let i = 0; i < 2; i += 1) { // the second time from the cache
      const r = await verify(token);
      expect(r.status).toBe(200);
      expect(r.body).toEqual({
        authenticated: true, user_id: null, client_id: machine.client_id, scopes: ['read', 'write'], expires_at: expect.any(String), auth_method: 'jwt',
      });
    }
  });

  it('accepts an authorization-code JWT and names its user', async () => {
    const user = await as.createUser();
    const app = await as.createClient({ redirectUris: ['http://127.0.0.1:8787/callback'], scope: 'openid read' });
    const { redirect } = await authorize({ issuer: as.url, clientId: app.client_id, redirectUri: 'http://127.0.0.1:8787/callback', scope: 'read', email: user.email, password: user.password, state: 's' });
    const { body } = await tokenRequest(as.url, { grant_type: 'authorization_code', code: redirect.searchParams.get('code')!, redirect_uri: 'http://127.0.0.1:8787/callback' }, { basic: [app.client_id, app.client_secret!] });
    const r = await verify(String(body.access_token));
    expect(r.body).toMatchObject({ user_id: user.id, client_id: app.client_id, auth_method: 'jwt' });
    const me = await fetch(`${api.url}/v1/users/me`, { headers: { authorization: `Bearer ${String(body.access_token)}` } });
    expect(await me.json()).toMatchObject({ id: user.id, email: user.email });
  });

  it('accepts a token the test signs with the server\'s key (so the forgeries below fail for their flaw alone)', async () => {
    expect((await verify(await forge())).status).toBe(200);
  });

  it('answers an expired JWT with token_expired', async () => {
    const token = await clientToken();
    expect((await verify(token)).status).toBe(200);
    offset += 2 * 3600 * 1000;
    try {
      const r = await verify(token);
      expect(r.status).toBe(401);
      expect(r.body).toMatchObject({ error: 'token_expired', code: 401 });
      expect((await verify(await forge({ exp: Math.floor(Date.now() / 1000) - 60 }))).body.error).toBe('token_expired');
    } finally {
      offset -= 2 * 3600 * 1000;
    }
  });

  it('refuses a tampered JWT', async () => {
    const [h, p, s] = (await clientToken('read')).split('.');
    const payload = JSON.parse(Buffer.from(p!, 'base64url').toString());
    const tampered = Buffer.from(JSON.stringify({ ...payload, scope: 'read write admin' })).toString('base64url');
    await expectInvalid(`${h}.${tampered}.${s}`, /signature/);
  });

  it('refuses a wrong audience, a wrong issuer, a wrong typ and a not-yet-valid token', async () => {
    await expectInvalid(await forge({ aud: 'https://another-api.example.com' }), /audience/);
    await expectInvalid(await forge({ iss: 'https://evil.example.com' }), /authorization server/);
    await expectInvalid(await forge({}, { typ: 'JWT' }), /typ/);
    await expectInvalid(await forge({ nbf: Math.floor(Date.now() / 1000) + 3600 }), /not valid yet/);
  });

  it('refuses alg none and an HMAC token keyed with the public key', async () => {
    const enc = (v: object) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: as.url, aud: as.config.apiAudience, sub: machine.client_id, client_id: machine.client_id, iat: now, exp: now + 600, jti: randomUUID(), scope: 'read' };
    await expectInvalid(`${enc({ alg: 'none', typ: 'at+jwt', kid: signingKey.kid })}.${enc(claims)}.`);
    const { d: _private, ...publicJwk } = signingKey;
    const hmac = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: signingKey.kid }).sign(Buffer.from(JSON.stringify(publicJwk)));
    await expectInvalid(hmac, /algorithm/);
  });

  it('refuses a token signed with a key the authorization server does not publish (unknown kid)', async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const stranger = { ...(await exportJWK(privateKey)), kid: randomUUID() };
    await expectInvalid(await forge({}, {}, stranger), /key/);
    // Same kid as the server's key, different key: the signature fails.
    await expectInvalid(await forge({}, {}, { ...stranger, kid: signingKey.kid }), /signature/);
  });

  it('has the authorization server refuse to introspect a JWT access token, which resource servers verify themselves', async () => {
    const rs = await as.createClient({ grantTypes: ['client_credentials'], redirectUris: [], scope: 'openid', resourceServer: true });
    const introspect = async (token: string) => {
      const res = await fetch(`${as.url}/oauth/introspect`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${rs.client_id}:${rs.client_secret}`).toString('base64')}` },
        body: new URLSearchParams({ token }),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const jwt = await introspect(await clientToken());
    expect(jwt.status).toBe(400);
    expect(jwt.body).toMatchObject({ error: 'unsupported_token_type' });
    // Neither a token with no dot nor a dotted string that is no JWT is mistaken for one.
    for (const token of ['opaque-and-unknown', 'a.b.c']) expect(await introspect(token)).toEqual({ status: 200, body: { active: false } });
  });
});
