import { createLocalJWKSet, decodeJwt, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorize, tokenRequest } from './flows.ts';
import { postgresAvailable, startAuthServer, tempPostgres, type TestAuthServer } from './harness.ts';

const backends = [
  { name: 'SQLite', available: true, database: async () => ({ url: undefined, cleanup: async () => {} }) },
  { name: 'PostgreSQL', available: await postgresAvailable(), database: async () => tempPostgres() },
];

for (const backend of backends) {
  // oidc-provider looks the account up (findAccount) on every refresh and at userinfo.
  describe.skipIf(!backend.available)(`the signed-in account behind tokens on ${backend.name}`, () => {
    const redirectUri = 'http://127.0.0.1:8787/callback';
    let as: TestAuthServer;
    let cleanup: () => Promise<void>;
    let client: { client_id: string; client_secret?: string };

    beforeAll(async () => {
      const database = await backend.database();
      cleanup = database.cleanup;
      as = await startAuthServer({ databaseUrl: database.url });
      client = await as.createClient({ redirectUris: [redirectUri] });
    });
    afterAll(async () => {
      await as?.close({ removeDatabase: true });
      await cleanup?.();
    });

    const signIn = async (user: { email: string; password: string }) => {
      const { redirect } = await authorize({ issuer: as.url, clientId: client.client_id, redirectUri, scope: 'openid email profile offline_access', email: user.email, password: user.password });
      const tokens = await tokenRequest(as.url, { grant_type: 'authorization_code', code: redirect.searchParams.get('code')!, redirect_uri: redirectUri }, { basic: [client.client_id, client.client_secret!] });
      expect(tokens.status, JSON.stringify(tokens.body)).toBe(200);
      return tokens.body;
    };
    const refresh = (refreshToken: unknown) => tokenRequest(as.url, { grant_type: 'refresh_token', refresh_token: String(refreshToken) }, { basic: [client.client_id, client.client_secret!] });

    it('refreshes for the account and answers userinfo with its claims', async () => {
      const user = await as.createUser({ name: 'Ada Lovelace' });
      const refreshed = await refresh((await signIn(user)).refresh_token);
      expect(refreshed.status, JSON.stringify(refreshed.body)).toBe(200);
      expect(decodeJwt(String(refreshed.body.id_token)).sub).toBe(user.id);

      const res = await fetch(`${as.url}/oauth/userinfo`, { headers: { authorization: `Bearer ${refreshed.body.access_token}` } });
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ sub: user.id, email: user.email, email_verified: false, name: 'Ada Lovelace' });
    });

    it('signs ID tokens with its published ES256 key, and takes them back as id_token_hint at logout', async () => {
      const user = await as.createUser();
      // max_age puts auth_time in the ID token: the login's own claim beside the account's sub.
      const { redirect } = await authorize({ issuer: as.url, clientId: client.client_id, redirectUri, scope: 'openid offline_access', email: user.email, password: user.password, extra: { max_age: '600', nonce: 'n-42' } });
      const tokens = await tokenRequest(as.url, { grant_type: 'authorization_code', code: redirect.searchParams.get('code')!, redirect_uri: redirectUri }, { basic: [client.client_id, client.client_secret!] });
      const idToken = String(tokens.body.id_token);
      expect(decodeJwt(idToken)).toMatchObject({ sub: user.id, nonce: 'n-42', auth_time: expect.any(Number) });
      const refreshed = await refresh(tokens.body.refresh_token);
      const jwks = createLocalJWKSet((await (await fetch(`${as.url}/oauth/jwks`)).json()) as JSONWebKeySet);
      for (const token of [idToken, String(refreshed.body.id_token)]) {
        const { payload, protectedHeader } = await jwtVerify(token, jwks, { issuer: as.url, audience: client.client_id });
        expect(protectedHeader.alg).toBe('ES256');
        expect(payload.sub).toBe(user.id);
        // The account's claims and the login's own (patches/oidc-provider+9.13.3.patch builds them with Object.assign).
        expect(payload.auth_time).toBeTypeOf('number');
      }
      // The logout endpoint verifies the hint with the server's own public key.
      const logout = (hint: string) => fetch(`${as.url}/oauth/logout?id_token_hint=${encodeURIComponent(hint)}`);
      const accepted = await logout(idToken);
      expect(accepted.status).toBe(200);
      expect(await accepted.text()).toContain('<form');
      const [header, body, signature] = idToken.split('.');
      const forged = `${header}.${body}.${signature!.startsWith('A') ? 'B' : 'A'}${signature!.slice(1)}`;
      expect((await logout(forged)).status).toBe(400);
    });

    it('refuses to refresh for an account that no longer exists', async () => {
      const user = await as.createUser();
      const tokens = await signIn(user);
      await as.server.db.knex('users').where({ id: user.id }).delete();
      const refreshed = await refresh(tokens.refresh_token);
      expect(refreshed.status).toBe(400);
      expect(refreshed.body.error).toBe('invalid_grant');
    });
  });
}
