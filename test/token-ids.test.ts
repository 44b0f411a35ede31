import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issuedAtPrefix } from '../src/oidc/token-ids.ts';
import { authorize, tokenRequest } from './flows.ts';
import { postgresAvailable, startAuthServer, tempPostgres, type TestAuthServer } from './harness.ts';

// A stored token's value: the millisecond of issue in 9 base-36 digits, then 256 random bits.
const ORDERED = /^([0-9a-z]{9})[A-Za-z0-9_-]{43}$/;
const issuedAt = (token: unknown): number => parseInt(ORDERED.exec(String(token))![1]!, 36);
const nextMillisecond = () => new Promise((resolve) => setTimeout(resolve, 3));

describe('the issue-time prefix', () => {
  it('keeps its width, so that text order is time order', () => {
    expect(issuedAtPrefix(35) < issuedAtPrefix(36)).toBe(true);
    const now = Date.now();
    const times = [now, now + 1, now + 36 ** 3, now + 10 * 365 * 86_400_000];
    const prefixes = times.map(issuedAtPrefix);
    expect(prefixes.every((p) => p.length === 9)).toBe(true);
    expect([...prefixes].sort()).toEqual(prefixes);
  });
});

const backends = [
  { name: 'SQLite', available: true, database: async () => ({ url: undefined, cleanup: async () => {} }) },
  { name: 'PostgreSQL', available: await postgresAvailable(), database: async () => tempPostgres() },
];

for (const backend of backends) {
  describe.skipIf(!backend.available)(`stored tokens issued in order on ${backend.name}`, () => {
    const redirectUri = 'http://127.0.0.1:8787/callback';
    let as: TestAuthServer;
    let service: { client_id: string; client_secret?: string };
    let introspector: { client_id: string; client_secret?: string };
    let dropDatabase = async () => {};

    beforeAll(async () => {
      const database = await backend.database();
      dropDatabase = database.cleanup;
      as = await startAuthServer({ databaseUrl: database.url });
      service = await as.createClient({ grantTypes: ['client_credentials'], scope: 'read write', redirectUris: [] });
      introspector = await as.createClient({ grantTypes: ['client_credentials'], scope: 'openid', redirectUris: [], resourceServer: true });
    });
    afterAll(async () => {
      await as?.close({ removeDatabase: true });
      await dropDatabase();
    });

    const introspect = async (token: string) => {
      const res = await fetch(`${as.url}/oauth/introspect`, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          authorization: `Basic ${Buffer.from(`${introspector.client_id}:${introspector.client_secret}`).toString('base64')}`,
        },
        body: new URLSearchParams({ token }).toString(),
      });
      return (await res.json()) as Record<string, unknown>;
    };

    it('gives client_credentials tokens the time of issue, and the table keeps them in that order', async () => {
      const issued: string[] = [];
      for (let i = 0; i < 5; i += 1) {
        const before = Date.now();
        const { status, body } = await tokenRequest(as.url, { grant_type: 'client_credentials', scope: 'read' }, { basic: [service.client_id, service.client_secret!] });
        expect(status).toBe(200);
        expect(body.access_token).toMatch(ORDERED);
        expect(issuedAt(body.access_token)).toBeGreaterThanOrEqual(before);
        expect(issuedAt(body.access_token)).toBeLessThanOrEqual(Date.now());
        issued.push(String(body.access_token));
        await nextMillisecond();
      }
      // The primary key's order, (model, id), is the order of issue: new rows go to its end.
      const stored = await as.server.db.knex('oidc_payloads').where({ model: 'ClientCredentials' }).whereIn('id', issued).orderBy('id').pluck('id');
      expect(stored).toEqual(issued);
      // And each still works as a token.
      for (const token of issued) expect(await introspect(token)).toMatchObject({ active: true, client_id: service.client_id, scope: 'read' });
    });

    it('gives authorization codes, access and refresh tokens and grants the time of issue', async () => {
      const app = await as.createClient({ redirectUris: [redirectUri], scope: 'openid offline_access read' });
      const user = await as.createUser();
      const before = Date.now();
      const { redirect } = await authorize({ issuer: as.url, clientId: app.client_id, redirectUri, scope: 'openid offline_access read', email: user.email, password: user.password, extra: { prompt: 'consent' } });
      const code = redirect.searchParams.get('code')!;
      expect(code).toMatch(ORDERED);
      expect(issuedAt(code)).toBeGreaterThanOrEqual(before);
      const exchanged = await tokenRequest(as.url, { grant_type: 'authorization_code', code, redirect_uri: redirectUri }, { basic: [app.client_id, app.client_secret!] });
      expect(exchanged.status).toBe(200);
      expect(exchanged.body.access_token).toMatch(ORDERED);
      expect(exchanged.body.refresh_token).toMatch(ORDERED);
      const grantId = await as.server.db.knex('oidc_payloads').where({ model: 'RefreshToken', id: exchanged.body.refresh_token }).first('grant_id');
      expect(grantId?.grant_id).toMatch(ORDERED);

      await nextMillisecond();
      const refreshed = await tokenRequest(as.url, { grant_type: 'refresh_token', refresh_token: String(exchanged.body.refresh_token) }, { basic: [app.client_id, app.client_secret!] });
      expect(refreshed.status).toBe(200);
      expect(String(refreshed.body.refresh_token) > String(exchanged.body.refresh_token)).toBe(true);
      expect(await introspect(String(refreshed.body.access_token))).toMatchObject({ active: true, sub: user.id });
    });
  });
}

describe('JWT access tokens', () => {
  let as: TestAuthServer;
  beforeAll(async () => {
    as = await startAuthServer({ env: { JWT_ACCESS_TOKENS: 'true' } });
  });
  afterAll(async () => {
    await as?.close({ removeDatabase: true });
  });

  it('keep the jti the library makes: a JWT is not stored, so it has no row to place', async () => {
    const service = await as.createClient({ grantTypes: ['client_credentials'], scope: 'read', redirectUris: [] });
    const { status, body } = await tokenRequest(as.url, { grant_type: 'client_credentials', scope: 'read' }, { basic: [service.client_id, service.client_secret!] });
    expect(status).toBe(200);
    const claims = JSON.parse(Buffer.from(String(body.access_token).split('.')[1]!, 'base64url').toString()) as { jti: string };
    expect(claims.jti).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await as.server.db.knex('oidc_payloads').where({ id: claims.jti }).first()).toBeUndefined();
  });
});
