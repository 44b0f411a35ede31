import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPayloadStore, type PayloadRow } from '../adapters/payload-store.ts';
import { migrate, openDatabase, type Database } from '../src/db/knex.ts';
import { authorize, tokenRequest } from './flows.ts';
import { postgresAvailable, startAuthServer, tempPostgres, type TestAuthServer } from './harness.ts';

/** Runs `work`, counting the queries on oidc_payloads (any, with `all`) this process sends meanwhile (but for `ignored`'s). */
async function countingPayloadQueries<T>(work: () => Promise<T>, ignored?: pg.Client, all = false): Promise<{ result: T; queries: number }> {
  const query = pg.Client.prototype.query;
  let queries = 0;
  pg.Client.prototype.query = function (this: pg.Client, ...args: Parameters<typeof query>) {
    const config = args[0] as string | { text?: string };
    if (this !== ignored && (all || (typeof config === 'string' ? config : config.text ?? '').includes('oidc_payloads'))) queries += 1;
    return (query as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof query;
  try {
    return { result: await work(), queries };
  } finally {
    pg.Client.prototype.query = query;
  }
}

// Introspection looks a token up as three models at once (oidc-provider's findToken), then reads
// its grant; on PostgreSQL those reads are one query (adapters/payload-store.ts).
describe.skipIf(!(await postgresAvailable()))('introspection on PostgreSQL', () => {
  const redirectUri = 'http://127.0.0.1:8787/callback';
  let as: TestAuthServer;
  let database: Awaited<ReturnType<typeof tempPostgres>>;
  let introspector: [string, string];
  let service: [string, string];
  let web: [string, string];
  let user: { id: string; email: string; password: string };

  beforeAll(async () => {
    database = await tempPostgres();
    as = await startAuthServer({ databaseUrl: database.url });
    const resourceServer = await as.createClient({ grantTypes: ['client_credentials'], scope: 'openid', redirectUris: [], resourceServer: true });
    const machine = await as.createClient({ grantTypes: ['client_credentials'], scope: 'read', redirectUris: [] });
    const app = await as.createClient({ redirectUris: [redirectUri] });
    const credentials = (c: { client_id: string; client_secret?: string }): [string, string] => [c.client_id, c.client_secret!];
    [introspector, service, web] = [credentials(resourceServer), credentials(machine), credentials(app)];
    user = await as.createUser();
    // The introspecting client is read once, then kept (adapters/client-cache.ts).
    await introspect('warm-up');
  });
  afterAll(async () => {
    await as?.close({ removeDatabase: true });
    await database?.cleanup();
  });

  /** Introspects `token`; also counts the queries on oidc_payloads the server sent meanwhile. */
  const introspect = async (token: string) => {
    const { result, queries } = await countingPayloadQueries(() => fetch(`${as.url}/oauth/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(introspector.join(':')).toString('base64')}` },
      body: new URLSearchParams({ token }).toString(),
    }).then(async (res) => ({ status: res.status, body: (await res.json()) as Record<string, unknown> })));
    return { ...result, reads: queries };
  };

  /** An access token and a refresh token of a user's grant, from the authorization-code flow. */
  const userTokens = async () => {
    const { redirect } = await authorize({ issuer: as.url, clientId: web[0], redirectUri, scope: 'openid offline_access read', email: user.email, password: user.password });
    const code = await tokenRequest(as.url, { grant_type: 'authorization_code', code: redirect.searchParams.get('code')!, redirect_uri: redirectUri }, { basic: web });
    expect(code.status, JSON.stringify(code.body)).toBe(200);
    return code.body as { access_token: string; refresh_token: string };
  };

  it('finds an access token, a client_credentials token and a refresh token, each with its grant, in one query', async () => {
    const code = await userTokens();
    const machine = await tokenRequest(as.url, { grant_type: 'client_credentials', scope: 'read' }, { basic: service });
    expect(machine.status, JSON.stringify(machine.body)).toBe(200);

    const cases = [
      [machine.body.access_token, 'client_credentials'],
      // Tokens of a user's grant: the grant comes with the token.
      [code.access_token, 'authorization_code'],
      [code.refresh_token, 'authorization_code'],
    ] as const;
    for (const [token, grantType] of cases) {
      const found = await introspect(String(token));
      expect(found.body, String(token)).toMatchObject({ active: true, client_id: grantType === 'client_credentials' ? service[0] : web[0] });
      expect(found.reads, grantType).toBe(1);
    }
  });

  it('finds a token inactive once another process removed its grant, the grant read with the token each time', async () => {
    const { access_token: token } = await userTokens();
    expect((await introspect(token)).body).toMatchObject({ active: true });
    const outside = new pg.Client({ connectionString: database.url });
    await outside.connect();
    try {
      const { rows } = await outside.query(`SELECT grant_id FROM oidc_payloads WHERE model = 'AccessToken' AND id = $1`, [token]);
      expect(rows[0]?.grant_id).toBeTruthy();
      expect((await outside.query(`DELETE FROM oidc_payloads WHERE model = 'Grant' AND id = $1`, [rows[0].grant_id])).rowCount).toBe(1);
    } finally {
      await outside.end();
    }
    expect(await introspect(token)).toMatchObject({ status: 200, body: { active: false }, reads: 1 });
  });

  it('refreshes with two queries: the refresh token with its grant and account, then the rotation stored', async () => {
    let refreshToken = (await userTokens()).refresh_token;
    for (let i = 0; i < 3; i += 1) {
      const { result, queries } = await countingPayloadQueries(() => tokenRequest(as.url, { grant_type: 'refresh_token', refresh_token: refreshToken }, { basic: web }), undefined, true);
      expect(result.status, JSON.stringify(result.body)).toBe(200);
      expect(queries).toBe(2);
      // The account read with the token is the one the ID token is about.
      const claims = JSON.parse(Buffer.from(String(result.body.id_token).split('.')[1]!, 'base64url').toString()) as { sub: string };
      expect(claims.sub).toBe(user.id);
      refreshToken = String(result.body.refresh_token);
    }
  });

  it('refuses a refresh once another process removed the account, found missing with the token', async () => {
    const someone = await as.createUser();
    const { redirect } = await authorize({ issuer: as.url, clientId: web[0], redirectUri, scope: 'openid offline_access read', email: someone.email, password: someone.password });
    const code = await tokenRequest(as.url, { grant_type: 'authorization_code', code: redirect.searchParams.get('code')!, redirect_uri: redirectUri }, { basic: web });
    expect(code.status, JSON.stringify(code.body)).toBe(200);
    const outside = new pg.Client({ connectionString: database.url });
    await outside.connect();
    try {
      expect((await outside.query('DELETE FROM users WHERE id = $1', [someone.id])).rowCount).toBe(1);
    } finally {
      await outside.end();
    }
    const refused = await tokenRequest(as.url, { grant_type: 'refresh_token', refresh_token: String(code.body.refresh_token) }, { basic: web });
    expect(refused).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
  });

  it('answers inactive for an unknown token, in one query', async () => {
    const found = await introspect('not-a-token-we-issued');
    expect(found).toMatchObject({ status: 200, body: { active: false }, reads: 1 });
  });
});

// Upserts outside a redemption asked for in one turn of the event loop are one statement.
describe.skipIf(!(await postgresAvailable()))('upserts on PostgreSQL', () => {
  let database: Awaited<ReturnType<typeof tempPostgres>>;
  let db: Database;
  let outside: pg.Client;
  const row = (id: string, model = 'AccessToken'): PayloadRow => ({ model, id, payload: '{}', grant_id: null, user_code: null, uid: null, expires_at: null });
  // One query at a time on the outside connection (pg deprecates queueing them on a client).
  let outsideFree: Promise<unknown> = Promise.resolve();
  const stored = (id: string) => {
    const count = outsideFree.then(async () => (await outside.query('SELECT id FROM oidc_payloads WHERE id = $1', [id])).rowCount);
    outsideFree = count.catch(() => {});
    return count;
  };

  beforeAll(async () => {
    database = await tempPostgres();
    db = openDatabase(database.url);
    await migrate(db);
    outside = new pg.Client({ connectionString: database.url });
    await outside.connect();
  });
  afterAll(async () => {
    await outside?.end();
    await db?.close();
    await database?.cleanup();
  });

  it('stores the upserts of one turn in one statement, each committed when its promise resolves', async () => {
    const store = createPayloadStore(db.knex, () => undefined);
    const ids = ['a1', 'a2', 'a3', 'a4'];
    const { queries } = await countingPayloadQueries(async () => {
      await Promise.all(ids.map(async (id) => {
        await store.upsert(row(id));
        expect(await stored(id)).toBe(1);
      }));
    }, outside);
    expect(queries).toBe(1);
  });

  it('sends a failed batch again row by row: only the caller whose row is refused sees the error', async () => {
    const store = createPayloadStore(db.knex, () => undefined);
    const refused = row('b2', 'M'.repeat(100)); // longer than the model column takes
    const results = await Promise.allSettled([store.upsert(row('b1')), store.upsert(refused), store.upsert(row('b3'))]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect([await stored('b1'), await stored('b2'), await stored('b3')]).toEqual([1, 0, 1]);
  });

  it('keeps the order asked for: a removal after an upsert in the same turn removes the row, an upsert after it stores it again', async () => {
    const store = createPayloadStore(db.knex, () => undefined);
    await Promise.all([store.upsert(row('c1')), store.destroy('AccessToken', 'c1')]);
    expect(await stored('c1')).toBe(0);
    await Promise.all([store.upsert(row('c2')), store.destroy('AccessToken', 'c2'), store.upsert(row('c2'))]);
    expect(await stored('c2')).toBe(1);
  });

  it('stores the last upsert of a row when a failed batch is sent again row by row', async () => {
    const store = createPayloadStore(db.knex, () => undefined);
    const older = { ...row('d1'), payload: '{"v":1}' };
    const newer = { ...row('d1'), payload: '{"v":2}' };
    const results = await Promise.allSettled([store.upsert(older), store.upsert(row('d2', 'M'.repeat(100))), store.upsert(newer)]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((await outside.query(`SELECT payload FROM oidc_payloads WHERE id = 'd1'`)).rows).toEqual([{ payload: '{"v":2}' }]);
  });

  it('stores a burst larger than one statement takes', async () => {
    const store = createPayloadStore(db.knex, () => undefined);
    const ids = Array.from({ length: 75 }, (_, i) => `e${i}`);
    await Promise.all(ids.map((id) => store.upsert(row(id))));
    expect((await outside.query(`SELECT count(*)::int AS n FROM oidc_payloads WHERE id LIKE 'e%'`)).rows[0].n).toBe(75);
  });
});
