import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorize, CookieJar, csrfOf, get, pkcePair, postForm, tokenRequest } from './flows.ts';
import { createClientService } from '../src/clients/service.ts';
import { openDatabase } from '../src/db/knex.ts';
import { startAuthServer, type TestAuthServer } from './harness.ts';

const redirectUri = 'http://127.0.0.1:8787/callback';

describe('bad input at the authorization and token endpoints', () => {
  let as: TestAuthServer;
  let user: { email: string; password: string };
  let web: { client_id: string; client_secret?: string };
  let other: { client_id: string; client_secret?: string };
  let spa: { client_id: string };

  beforeAll(async () => {
    as = await startAuthServer();
    user = await as.createUser();
    web = await as.createClient({ redirectUris: [redirectUri] });
    other = await as.createClient({ redirectUris: [redirectUri] });
    spa = await as.createClient({ redirectUris: [redirectUri], public: true });
  });
  afterAll(() => as.close({ removeDatabase: true }));

  const basic = (c: { client_id: string; client_secret?: string }): [string, string] => [c.client_id, c.client_secret!];
  const codeFor = async (clientId: string, pkce?: { challenge: string }) => {
    const { redirect } = await authorize({ issuer: as.url, clientId, redirectUri, scope: 'read write', email: user.email, password: user.password, state: 's1', pkce });
    const code = redirect.searchParams.get('code');
    if (!code) throw new Error(`no code in ${redirect}`);
    return code;
  };
  const authorizeUrl = (params: Record<string, string>) => `${as.url}/oauth/authorize?${new URLSearchParams({ response_type: 'code', scope: 'read', state: 's', ...params })}`;

  it('shows an error page, never a redirect, for an unregistered redirect_uri', async () => {
    const res = await get(authorizeUrl({ client_id: web.client_id, redirect_uri: 'https://evil.example/cb' }), new CookieJar());
    expect(res.status).toBe(400);
    expect(res.headers.get('location')).toBeNull();
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    const html = await res.text();
    expect(html).toContain('invalid_redirect_uri');
    expect(html).not.toContain('evil.example/cb?');
  });

  it('shows an error page, never a redirect, for an unknown client', async () => {
    const res = await get(authorizeUrl({ client_id: 'lk_nobody', redirect_uri: redirectUri }), new CookieJar());
    expect(res.status).toBe(400);
    expect(res.headers.get('location')).toBeNull();
    expect(await res.text()).toContain('invalid_client');
  });

  it('sends the page security headers on the error page', async () => {
    const res = await get(authorizeUrl({ client_id: 'lk_nobody', redirect_uri: redirectUri }), new CookieJar());
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
  });

  it('sends the page security headers on the library\'s own logout page too', async () => {
    const res = await get(`${as.url}/oauth/logout`, new CookieJar());
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
  });

  it('refuses a login or consent form without the page\'s CSRF token', async () => {
    const jar = new CookieJar();
    const start = await get(authorizeUrl({ client_id: web.client_id, redirect_uri: redirectUri }), jar);
    const page = await get(new URL(start.headers.get('location')!, as.url).href, jar);
    const html = await page.text();
    const uid = /\/interaction\/([^/"]+)\/login/.exec(html)![1]!;
    expect(csrfOf(html)).not.toBe('');
    for (const csrf of ['', 'forged-token']) {
      const res = await postForm(`${as.url}/interaction/${uid}/login`, jar, { email: user.email, password: user.password, csrf });
      expect(res.status).toBe(403);
      expect(await res.text()).toContain('did not come from this page');
    }
    // The same form with its token goes through.
    const ok = await postForm(`${as.url}/interaction/${uid}/login`, jar, { email: user.email, password: user.password, csrf: csrfOf(html) });
    expect(ok.status).toBe(303);

    // The consent page's Allow and Deny forms are guarded the same way.
    let res = ok;
    while (res.status === 303 && !res.headers.get('location')!.includes('/interaction/')) res = await get(new URL(res.headers.get('location')!, as.url).href, jar);
    const consent = await (await get(new URL(res.headers.get('location')!, as.url).href, jar)).text();
    const consentUid = /\/interaction\/([^/"]+)\/confirm/.exec(consent)![1]!;
    for (const action of ['confirm', 'abort']) {
      for (const csrf of ['', 'forged-token', csrfOf(html)]) {
        if (csrf === csrfOf(html) && consentUid === uid) continue; // a login token is only foreign to another interaction
        const forged = await postForm(`${as.url}/interaction/${consentUid}/${action}`, jar, { csrf });
        expect(forged.status, `${action} with ${csrf || 'no token'}`).toBe(403);
      }
    }
    // Nothing was decided by the forged forms: the real Allow still completes the flow.
    const allow = await postForm(`${as.url}/interaction/${consentUid}/confirm`, jar, { csrf: csrfOf(consent) });
    expect(allow.status).toBe(303);
    let back = allow;
    for (let hop = 0; hop < 5 && !back.headers.get('location')!.startsWith(redirectUri); hop += 1) back = await get(new URL(back.headers.get('location')!, as.url).href, jar);
    expect(new URL(back.headers.get('location')!).searchParams.get('code')).toEqual(expect.any(String));
  });

  it('refuses a public client without PKCE, back at the app with invalid_request', async () => {
    const res = await get(authorizeUrl({ client_id: spa.client_id, redirect_uri: redirectUri }), new CookieJar());
    const location = new URL(res.headers.get('location')!);
    expect(location.searchParams.get('error')).toBe('invalid_request');
    expect(location.searchParams.get('error_description')).toMatch(/requires PKCE/);
    expect(location.searchParams.get('state')).toBe('s');
  });

  it('refuses the plain PKCE method', async () => {
    const res = await get(authorizeUrl({ client_id: spa.client_id, redirect_uri: redirectUri, code_challenge: 'a'.repeat(43), code_challenge_method: 'plain' }), new CookieJar());
    const location = new URL(res.headers.get('location')!);
    expect(location.searchParams.get('error')).toBe('invalid_request');
    expect(location.searchParams.get('error_description')).toMatch(/code_challenge_method/);
  });

  it('refuses duplicated parameters at the authorization endpoint, back at the app', async () => {
    const res = await get(`${authorizeUrl({ client_id: web.client_id, redirect_uri: redirectUri })}&scope=write`, new CookieJar());
    const location = new URL(res.headers.get('location')!);
    expect(location.origin + location.pathname).toBe(redirectUri);
    expect(location.searchParams.get('error')).toBe('invalid_request');
    expect(location.searchParams.get('error_description')).toBe("'scope' parameter must not be provided twice");
  });

  it('refuses a duplicated client_id with an error page, since the app cannot be identified', async () => {
    const res = await get(`${authorizeUrl({ client_id: web.client_id, redirect_uri: redirectUri })}&client_id=${other.client_id}`, new CookieJar());
    expect(res.status).toBe(400);
    expect(res.headers.get('location')).toBeNull();
  });

  it('completes a public client flow with PKCE and rejects a wrong verifier', async () => {
    const pkce = pkcePair();
    const wrong = await tokenRequest(as.url, { grant_type: 'authorization_code', code: await codeFor(spa.client_id, pkce), redirect_uri: redirectUri, client_id: spa.client_id, code_verifier: pkcePair().verifier });
    expect(wrong.status).toBe(400);
    expect(wrong.body.error).toBe('invalid_grant');
    const right = await tokenRequest(as.url, { grant_type: 'authorization_code', code: await codeFor(spa.client_id, pkce), redirect_uri: redirectUri, client_id: spa.client_id, code_verifier: pkce.verifier });
    expect(right.status).toBe(200);
    expect(typeof right.body.refresh_token).toBe('string');
  });

  it('rejects a second redemption of the same code and revokes the tokens of the first', async () => {
    const code = await codeFor(web.client_id);
    const first = await tokenRequest(as.url, { grant_type: 'authorization_code', code, redirect_uri: redirectUri }, { basic: basic(web) });
    expect(first.status).toBe(200);
    const second = await tokenRequest(as.url, { grant_type: 'authorization_code', code, redirect_uri: redirectUri }, { basic: basic(web) });
    expect(second.status).toBe(400);
    expect(second.body).toMatchObject({ error: 'invalid_grant', error_description: 'authorization code already consumed' });
    const introspected = await introspect(String(first.body.access_token), web);
    expect(introspected.active).toBe(false);
    const refreshed = await tokenRequest(as.url, { grant_type: 'refresh_token', refresh_token: String(first.body.refresh_token) }, { basic: basic(web) });
    expect(refreshed.body.error).toBe('invalid_grant');
  });

  it('yields exactly one token from twenty concurrent redemptions of one code', async () => {
    const code = await codeFor(web.client_id);
    const results = await Promise.all(Array.from({ length: 20 }, () =>
      tokenRequest(as.url, { grant_type: 'authorization_code', code, redirect_uri: redirectUri }, { basic: basic(web) })));
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    expect(results.filter((r) => r.body.error === 'invalid_grant')).toHaveLength(19);
  });

  it('rejects a code redeemed by another client', async () => {
    const code = await codeFor(web.client_id);
    const res = await tokenRequest(as.url, { grant_type: 'authorization_code', code, redirect_uri: redirectUri }, { basic: basic(other) });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'invalid_grant', error_description: 'client mismatch' });
  });

  it('rejects an expired code', async () => {
    const code = await codeFor(web.client_id);
    const row = await as.server.db.knex('oidc_payloads').first('payload').where({ model: 'AuthorizationCode', id: code });
    const payload = JSON.parse(row.payload);
    payload.exp = Math.floor(Date.now() / 1000) - 10;
    await as.server.db.knex('oidc_payloads').where({ model: 'AuthorizationCode', id: code }).update({ payload: JSON.stringify(payload) });
    const res = await tokenRequest(as.url, { grant_type: 'authorization_code', code, redirect_uri: redirectUri }, { basic: basic(web) });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'invalid_grant', error_description: 'authorization code is expired' });
  });

  it('rejects a wrong client secret with invalid_client, in JSON and form alike', async () => {
    for (const json of [true, false]) {
      const res = await tokenRequest(as.url, { grant_type: 'authorization_code', code: 'x', redirect_uri: redirectUri, client_id: web.client_id, client_secret: 'wrong' }, { json });
      expect(res.status).toBe(401);
      expect(res.body.error).toBe('invalid_client');
    }
  });

  it('gives identical answers to JSON and form bodies', async () => {
    const cases: Record<string, string>[] = [
      { grant_type: 'authorization_code', redirect_uri: redirectUri },
      { grant_type: 'authorization_code', code: 'not-a-code', redirect_uri: redirectUri },
      { grant_type: 'password', username: 'a', password: 'b' },
      { grant_type: 'refresh_token', refresh_token: 'nope' },
    ];
    for (const body of cases) {
      const form = await tokenRequest(as.url, body, { basic: basic(web) });
      const json = await tokenRequest(as.url, body, { basic: basic(web), json: true });
      expect(json).toEqual(form);
      expect(form.status).toBe(400);
    }
  });

  it('answers malformed JSON, non-object JSON and nested values with a clear 400', async () => {
    const post = (body: string) => fetch(`${as.url}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    for (const [body, message] of [['{"grant_type": ', /not valid JSON/], ['["a"]', /JSON object/], ['{"scope": ["a"]}', /scope parameter must be a string/]] as const) {
      const res = await post(body);
      expect(res.status).toBe(400);
      const json = await res.json();
      expect(json.error).toBe('invalid_request');
      expect(json.error_description).toMatch(message);
    }
  });

  it('refuses bodies over 64 KiB', async () => {
    const res = await fetch(`${as.url}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `grant_type=client_credentials&pad=${'a'.repeat(70 * 1024)}`,
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: 'invalid_request', error_description: 'request body is larger than 64 KiB' });
  });

  it('refuses a streamed body (no Content-Length) once it passes 64 KiB, and the connection still answers', async () => {
    const chunks = [Buffer.from('grant_type=client_credentials&pad='), ...Array.from({ length: 20 }, () => Buffer.alloc(8 * 1024, 'a'))];
    const answers = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(new URL(as.url).port), '127.0.0.1');
      let received = '';
      socket.on('data', (d) => {
        received += String(d);
        // The second request on the same connection has been answered too.
        if ((received.match(/HTTP\/1\.1 /g) ?? []).length === 2 && received.trimEnd().endsWith('}')) {
          socket.end();
          resolve(received);
        }
      });
      socket.on('error', reject);
      socket.write('POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n');
      for (const chunk of chunks) socket.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
      socket.write('0\r\n\r\nGET /.well-known/openid-configuration HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    const [refusal, discovery] = answers.split(/(?=HTTP\/1\.1 )/);
    expect(refusal).toMatch(/^HTTP\/1\.1 400 /);
    expect(refusal).toContain('request body is larger than 64 KiB');
    expect(discovery).toMatch(/^HTTP\/1\.1 200 /);
  });

  it('refuses a client deleted while the server runs on its very next request, from this process or another', async () => {
    const cc = { grant_types: 'client_credentials', scope: 'read' } as const;
    for (const elsewhere of [false, true]) {
      const service = await as.createClient({ redirectUris: [], grantTypes: ['client_credentials'] });
      // Known to the server (its metadata and Client instance cached) before it goes.
      for (let i = 0; i < 2; i += 1) expect((await tokenRequest(as.url, { grant_type: cc.grant_types, scope: cc.scope }, { basic: basic(service) })).status).toBe(200);
      if (elsewhere) {
        // Another process (the CLI) on the same database file.
        const db = openDatabase(as.databaseUrl);
        expect(await createClientService(as.server.provider, db.knex).delete(service.client_id)).toBe(true);
        await db.close();
      } else {
        expect(await createClientService(as.server.provider, as.server.db.knex).delete(service.client_id)).toBe(true);
      }
      const refused = await tokenRequest(as.url, { grant_type: cc.grant_types, scope: cc.scope }, { basic: basic(service) });
      expect(refused.status, `deleted ${elsewhere ? 'elsewhere' : 'here'}`).toBe(401);
      expect(refused.body.error).toBe('invalid_client');
    }
  });

  it('refuses duplicated parameters at the token endpoint, however the name is encoded', async () => {
    for (const body of ['grant_type=client_credentials&scope=read&scope=write', 'grant_type=client_credentials&scope=read&&sc%6Fpe=write', 'scope+x=1&grant_type=client_credentials&scope%20x=2']) {
      const res = await fetch(`${as.url}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
      expect(res.status, body).toBe(400);
      expect(await res.json(), body).toMatchObject({ error: 'invalid_request', error_description: `the ${body.startsWith('scope+x') ? 'scope x' : 'scope'} parameter must not be provided twice` });
    }
  });

  it('lets a token request name several resources (RFC 8707), as repeated fields or a JSON array, judged by the grant\'s rules', async () => {
    const service = await as.createClient({ redirectUris: [], grantTypes: ['client_credentials'] });
    const api = as.config.apiAudience;
    for (const json of [false, true]) {
      const how = json ? 'JSON' : 'form';
      // One resource as a one-element array, or given once: a token for it.
      const one = await tokenRequest(as.url, { grant_type: 'client_credentials', scope: 'read', resource: json ? [api] : api }, { json, basic: basic(service) });
      expect(one.status, `${how}: ${JSON.stringify(one.body)}`).toBe(200);
      // Repeated, it is no repeat to refuse: the same resource twice is that resource.
      const twice = await tokenRequest(as.url, { grant_type: 'client_credentials', scope: 'read', resource: [api, api] }, { json, basic: basic(service) });
      expect(twice.status, `${how}: ${JSON.stringify(twice.body)}`).toBe(200);
      // Another one beside it is judged by the grant's rules: here, one this server does not know.
      const unknown = await tokenRequest(as.url, { grant_type: 'client_credentials', scope: 'read', resource: [api, 'https://unknown.example/'] }, { json, basic: basic(service) });
      expect(unknown, how).toMatchObject({ status: 400, body: { error: 'invalid_target' } });
      expect(unknown.body.error_description, how).toContain('https://unknown.example/');
    }
    // Every other parameter still may not repeat, nor be an array.
    const scopes = await tokenRequest(as.url, { grant_type: 'client_credentials', scope: ['read', 'write'] }, { json: true, basic: basic(service) });
    expect(scopes).toMatchObject({ status: 400, body: { error: 'invalid_request', error_description: 'the scope parameter must be a string' } });
    const notStrings = await tokenRequest(as.url, { grant_type: 'client_credentials', resource: [api, 1] as unknown as string[] }, { json: true, basic: basic(service) });
    expect(notStrings).toMatchObject({ status: 400, body: { error: 'invalid_request', error_description: 'the resource parameter must be a string or an array of strings' } });
    // At introspection, a repeated resource is a repeat like any other.
    const introspect = await fetch(`${as.url}/oauth/introspect`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'token=x&resource=a&resource=b' });
    expect(await introspect.json()).toMatchObject({ error: 'invalid_request', error_description: 'the resource parameter must not be provided twice' });
  });

  it('refuses a member repeated in a JSON body, however it is spelled', async () => {
    for (const body of [
      '{"grant_type":"client_credentials","grant_type":"refresh_token"}',
      '{"scope": "read", "grant_type":"client_credentials" ,\n "scope" : "write"}',
      '{"grant_type":"client_credentials","\u0073cope":"read","scope":"write"}',
    ]) {
      const res = await fetch(`${as.url}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      expect(res.status, body).toBe(400);
      expect((await res.json()).error_description, body).toMatch(/^the (grant_type|scope) parameter must not be provided twice$/);
    }
    // A name that only appears inside a value is no repeat.
    const res = await fetch(`${as.url}/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"grant_type":"client_credentials","client_id":"\\"grant_type\\":"}' });
    expect((await res.json()).error).toBe('invalid_client');
  });

  it('refuses other content types at the token endpoint', async () => {
    const res = await fetch(`${as.url}/oauth/token`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'grant_type=x' });
    expect(res.status).toBe(400);
    expect((await res.json()).error).toBe('invalid_request');
  });

  async function introspect(token: string, caller: { client_id: string; client_secret?: string }) {
    const res = await fetch(`${as.url}/oauth/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${caller.client_id}:${caller.client_secret}`).toString('base64')}` },
      body: new URLSearchParams({ token }),
    });
    return (await res.json()) as Record<string, unknown>;
  }

  it('lets only the token\'s own client or a resource server introspect it', async () => {
    const m2m = await as.createClient({ grantTypes: ['client_credentials'], redirectUris: [], scope: 'read' });
    const rs = await as.createClient({ grantTypes: ['client_credentials'], redirectUris: [], scope: 'read', resourceServer: true });
    const token = await tokenRequest(as.url, { grant_type: 'client_credentials', scope: 'read' }, { basic: basic(m2m) });
    const accessToken = String(token.body.access_token);
    expect(await introspect(accessToken, m2m)).toMatchObject({ active: true, client_id: m2m.client_id, scope: 'read', aud: as.config.apiAudience });
    expect(await introspect(accessToken, rs)).toMatchObject({ active: true, client_id: m2m.client_id });
    expect(await introspect(accessToken, web)).toEqual({ active: false });
    expect(await introspect('garbage', rs)).toEqual({ active: false });
  });

  it('revokes an access token (RFC 7009) so introspection reports it inactive', async () => {
    const m2m = await as.createClient({ grantTypes: ['client_credentials'], redirectUris: [], scope: 'read' });
    const token = String((await tokenRequest(as.url, { grant_type: 'client_credentials', scope: 'read' }, { basic: basic(m2m) })).body.access_token);
    const res = await fetch(`${as.url}/oauth/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${m2m.client_id}:${m2m.client_secret}`).toString('base64')}` },
      body: JSON.stringify({ token }),
    });
    expect(res.status).toBe(200);
    expect(await introspect(token, m2m)).toEqual({ active: false });
  });

  it('never answers bad input with a 5xx', async () => {
    const probes: Array<[string, RequestInit]> = [
      ['/oauth/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'null' }],
      ['/oauth/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"grant_type":{"$ne":1}}' }],
      ['/oauth/token', { method: 'POST', headers: { authorization: 'Basic %%%' }, body: '' }],
      ['/oauth/introspect', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' }],
      ['/oauth/authorize?client_id[]=x', { method: 'GET' }],
      ['/interaction/does-not-exist', { method: 'GET' }],
      ['/interaction/does-not-exist/login', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'email=a' }],
      ['/oauth/userinfo', { method: 'GET', headers: { authorization: 'Bearer nope' } }],
    ];
    for (const [path, init] of probes) {
      const res = await fetch(`${as.url}${path}`, { ...init, redirect: 'manual' });
      expect(res.status, path).toBeLessThan(500);
      expect(await res.text(), path).not.toMatch(/at .*\.(js|ts):\d+/);
    }
    expect(as.logs.join('\n')).not.toContain('"level":"error"');
  });
});
