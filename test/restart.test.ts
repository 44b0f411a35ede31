import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { createKeyStore } from '../src/oidc/keys.ts';
import { authorize, followToApp, get, tokenRequest } from './flows.ts';
import { startAuthServer, tempSqlite, type TestAuthServer } from './harness.ts';

const redirectUri = 'http://127.0.0.1:8787/callback';

/** fetch keeps sockets to the old server in its pool; the first use of each fails once, as with any restart. */
async function untilAnswering(url: string): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt += 1) {
    try {
      if ((await fetch(`${url}/.well-known/openid-configuration`)).ok) return;
    } catch {
      // a pooled socket to the stopped server; the next attempt opens a new one
    }
  }
  throw new Error(`${url} did not answer after the restart`);
}

describe('a restart on the same database', () => {
  const db = tempSqlite();
  let as: TestAuthServer | undefined;
  afterAll(async () => {
    await as?.close();
    db.cleanup();
  });

  it('keeps refresh tokens, login sessions and signing keys working', async () => {
    as = await startAuthServer({ databaseUrl: db.url });
    const { port } = as;
    const user = await as.createUser();
    const client = await as.createClient({ redirectUris: [redirectUri] });
    const basic: [string, string] = [client.client_id, client.client_secret!];

    const { redirect, jar } = await authorize({ issuer: as.url, clientId: client.client_id, redirectUri, scope: 'read write', email: user.email, password: user.password });
    const tokens = await tokenRequest(as.url, { grant_type: 'authorization_code', code: redirect.searchParams.get('code')!, redirect_uri: redirectUri }, { basic });
    expect(tokens.status).toBe(200);
    const jwksBefore = await (await fetch(`${as.url}/oauth/jwks`)).json();
    await as.close();

    as = await startAuthServer({ databaseUrl: db.url, port });
    await untilAnswering(as.url);
    expect(await (await fetch(`${as.url}/oauth/jwks`)).json()).toEqual(jwksBefore);

    const refreshed = await tokenRequest(as.url, { grant_type: 'refresh_token', refresh_token: String(tokens.body.refresh_token) }, { basic });
    expect(refreshed.status).toBe(200);
    expect(typeof refreshed.body.access_token).toBe('string');

    // The browser's session survived: authorizing again goes straight back to the app.
    const again = new URLSearchParams({ client_id: client.client_id, redirect_uri: redirectUri, response_type: 'code', scope: 'read write', state: 'after-restart' });
    const { location } = await followToApp(await get(`${as.url}/oauth/authorize?${again}`, jar), as.url, jar);
    expect(location?.searchParams.get('state')).toBe('after-restart');
    expect(location?.searchParams.get('code')).toBeTruthy();
  });

  it('signs with a rotated key after the restart, and still verifies tokens the old key signed, however late the restart', async () => {
    await as?.close();
    as = await startAuthServer({ databaseUrl: db.url, env: { JWT_ACCESS_TOKENS: 'true' } });
    const { port, config } = as;
    const machine = await as.createClient({ grantTypes: ['client_credentials'], redirectUris: [], scope: 'read' });
    const issue = async () => {
      const { status, body } = await tokenRequest(as!.url, { grant_type: 'client_credentials', scope: 'read' }, { basic: [machine.client_id, machine.client_secret!] });
      expect(status).toBe(200);
      return String(body.access_token);
    };
    const before = await issue();
    const rotation = await createKeyStore(as.server.db.knex).rotate('ES256');
    expect(rotation.replaces).toEqual([decodeProtectedHeader(before).kid]);
    // The running server keeps signing with its key until it restarts...
    expect(decodeProtectedHeader(await issue()).kid).toBe(decodeProtectedHeader(before).kid);
    // ...which may be hours after the rotation: move every key's history three hours back.
    const hours3 = 3 * 3600_000;
    await as.server.db.knex('signing_keys').decrement('created_at', hours3);
    await as.server.db.knex('signing_keys').whereNotNull('retired_at').decrement('retired_at', hours3);
    await as.close();

    as = await startAuthServer({ databaseUrl: db.url, port, env: { JWT_ACCESS_TOKENS: 'true' } });
    await untilAnswering(as.url);
    const jwks = createLocalJWKSet((await (await fetch(`${as.url}/oauth/jwks`)).json()) as JSONWebKeySet);
    const verify = (token: string) => jwtVerify(token, jwks, { issuer: as!.url, audience: config.apiAudience });
    await expect(verify(before)).resolves.toMatchObject({ protectedHeader: { kid: decodeProtectedHeader(before).kid } });
    const after = await issue();
    expect(decodeProtectedHeader(after).kid).toBe(rotation.kid);
    await expect(verify(after)).resolves.toBeTruthy();
  });
});
