import { AsyncLocalStorage } from 'node:async_hooks';
import { createRequire } from 'node:module';
import knexFactory from 'knex';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AlreadyRedeemed, createPayloadStore, type PayloadRow } from '../adapters/payload-store.ts';
import { migrate, openDatabase, type Database } from '../src/db/knex.ts';
import { beginPgTransaction } from '../src/db/pg-statements.ts';
import { authorize, tokenRequest } from './flows.ts';
import { postgresAvailable, startAuthServer, tempPostgres, tempSqlite, type TestAuthServer } from './harness.ts';

// On PostgreSQL a redeemed code or refresh token and the tokens issued for it commit together,
// before the response (adapters/payload-store.ts). Failures are made real with triggers in the
// test's own database: one that refuses to store access tokens, and one that fails the commit.
describe.skipIf(!(await postgresAvailable()))('redeeming a code or refresh token on PostgreSQL', () => {
  const redirectUri = 'http://127.0.0.1:8787/callback';
  let as: TestAuthServer;
  let database: Awaited<ReturnType<typeof tempPostgres>>;
  let sql: pg.Client;
  let client: { client_id: string; client_secret?: string };
  let basic: [string, string];
  let user: { email: string; password: string };

  beforeAll(async () => {
    database = await tempPostgres();
    as = await startAuthServer({ databaseUrl: database.url });
    client = await as.createClient({ redirectUris: [redirectUri] });
    basic = [client.client_id, client.client_secret!];
    user = await as.createUser();
    sql = new pg.Client({ connectionString: database.url });
    await sql.connect();
    await sql.query(`CREATE FUNCTION refuse_access_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'access tokens refused by the test'; END $$`);
  });
  afterEach(async () => {
    await sql.query('DROP TRIGGER IF EXISTS refuse_now ON oidc_payloads');
    await sql.query('DROP TRIGGER IF EXISTS refuse_at_commit ON oidc_payloads');
  });
  afterAll(async () => {
    await sql?.end();
    await as?.close();
    await database?.cleanup();
  });

  const code = async () => {
    const { redirect } = await authorize({ issuer: as.url, clientId: client.client_id, redirectUri, scope: 'openid offline_access read', email: user.email, password: user.password });
    return redirect.searchParams.get('code')!;
  };
  const redeem = (authorizationCode: string) => tokenRequest(as.url, { grant_type: 'authorization_code', code: authorizationCode, redirect_uri: redirectUri }, { basic });
  const refresh = (refreshToken: unknown) => tokenRequest(as.url, { grant_type: 'refresh_token', refresh_token: String(refreshToken) }, { basic });
  const signIn = async () => {
    const tokens = await redeem(await code());
    expect(tokens.status, JSON.stringify(tokens.body)).toBe(200);
    return tokens.body;
  };
  const refuseAccessTokens = (when: 'now' | 'at commit') => sql.query(when === 'now'
    ? `CREATE TRIGGER refuse_now BEFORE INSERT ON oidc_payloads FOR EACH ROW
        WHEN (NEW.model = 'AccessToken') EXECUTE FUNCTION refuse_access_tokens()`
    : `CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON oidc_payloads DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW WHEN (NEW.model = 'AccessToken') EXECUTE FUNCTION refuse_access_tokens()`);

  it('rotates a refresh token, and a second use of the old one revokes the grant, the new token included', async () => {
    const first = await signIn();
    const second = await refresh(first.refresh_token);
    expect(second.status, JSON.stringify(second.body)).toBe(200);
    expect(second.body.refresh_token).not.toBe(first.refresh_token);

    const replayed = await refresh(first.refresh_token);
    expect(replayed).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(await refresh(second.body.refresh_token)).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
  });

  it('keeps the refresh token usable when its successor could not be stored', async () => {
    const first = await signIn();
    await refuseAccessTokens('now');
    const failed = await refresh(first.refresh_token);
    expect(failed.status).toBe(500);
    expect(failed.body.access_token).toBeUndefined();

    await sql.query('DROP TRIGGER refuse_now ON oidc_payloads');
    const retried = await refresh(first.refresh_token);
    expect(retried.status, JSON.stringify(retried.body)).toBe(200);
    expect(typeof retried.body.access_token).toBe('string');
  });

  it('keeps an authorization code redeemable when its tokens could not be stored', async () => {
    const authorizationCode = await code();
    await refuseAccessTokens('now');
    expect((await redeem(authorizationCode)).status).toBe(500);

    await sql.query('DROP TRIGGER refuse_now ON oidc_payloads');
    const retried = await redeem(authorizationCode);
    expect(retried.status, JSON.stringify(retried.body)).toBe(200);
    expect(typeof retried.body.refresh_token).toBe('string');
  });

  it('answers with a server error, not tokens, when the commit fails, and stores none of it', async () => {
    const first = await signIn();
    await refuseAccessTokens('at commit');
    const failed = await refresh(first.refresh_token);
    expect(failed).toEqual({ status: 500, body: { error: 'server_error', error_description: 'the tokens could not be stored; try again' } });
    expect(as.logs.some((line) => line.includes('token request not stored') && line.includes('access tokens refused by the test'))).toBe(true);
    const { rows } = await sql.query(`SELECT count(*)::int AS n FROM oidc_payloads WHERE model = 'RefreshToken' AND consumed_at IS NOT NULL`);

    await sql.query('DROP TRIGGER refuse_at_commit ON oidc_payloads');
    const retried = await refresh(first.refresh_token);
    expect(retried.status, JSON.stringify(retried.body)).toBe(200);
    const after = await sql.query(`SELECT count(*)::int AS n FROM oidc_payloads WHERE model = 'RefreshToken' AND consumed_at IS NOT NULL`);
    expect(after.rows[0].n).toBe(rows[0].n + 1);
  });

  it('issues client_credentials tokens, which redeem nothing, as before', async () => {
    const service = await as.createClient({ redirectUris: [], grantTypes: ['client_credentials'], scope: 'read' });
    const issued = await tokenRequest(as.url, { grant_type: 'client_credentials', scope: 'read' }, { basic: [service.client_id, service.client_secret!] });
    expect(issued.status, JSON.stringify(issued.body)).toBe(200);
  });
});

describe.skipIf(!(await postgresAvailable()))('the PostgreSQL store inside one redemption', () => {
  const id = () => Math.random().toString(36).slice(2);

  it('lets the request read what it wrote, stores nothing before the commit, and nothing when told not to keep it', async () => {
    const database = await tempPostgres();
    const db = openDatabase(database.url);
    const outside = new pg.Client({ connectionString: database.url });
    try {
      await migrate(db);
      await outside.connect();
      // The request being served, as oidc-provider's Provider.ctx gives it to the shared store.
      const serving = new AsyncLocalStorage<object>();
      const store = createPayloadStore(db.knex, () => serving.getStore());
      const within = (succeeded: boolean, respond: () => Promise<void>) => {
        const request = {};
        return serving.run(request, () => store.redeemingIn(request, respond, () => succeeded));
      };
      const row = (model: string, key: string, grantId: string): PayloadRow => ({ model, id: key, payload: JSON.stringify({ grantId }), grant_id: grantId, user_code: null, uid: null, expires_at: null });
      const now = () => Math.floor(Date.now() / 1000);
      const stored = async (model: string, key: string) => (await outside.query('SELECT consumed_at FROM oidc_payloads WHERE model = $1 AND id = $2', [model, key])).rows[0];

      const [kept, keptAccess] = [id(), id()];
      await store.upsert(row('RefreshToken', kept, 'g1'));
      await within(true, async () => {
        expect(await store.consume('RefreshToken', kept, now())).toBe(true);
        await store.upsert(row('AccessToken', keptAccess, 'g1'));
        expect(await store.find('AccessToken', 'id', keptAccess)).toMatchObject({ consumed_at: null });
        expect(await stored('AccessToken', keptAccess)).toBeUndefined();
        expect(await stored('RefreshToken', kept)).toEqual({ consumed_at: null });
      });
      expect(await stored('AccessToken', keptAccess)).toBeDefined();
      expect((await stored('RefreshToken', kept)).consumed_at).not.toBeNull();

      const [dropped, droppedAccess] = [id(), id()];
      await store.upsert(row('RefreshToken', dropped, 'g2'));
      await within(false, async () => {
        await store.consume('RefreshToken', dropped, now());
        await store.upsert(row('AccessToken', droppedAccess, 'g2'));
      });
      expect(await stored('AccessToken', droppedAccess)).toBeUndefined();
      expect(await stored('RefreshToken', dropped)).toEqual({ consumed_at: null });

      // Work the request started that writes after its response writes on its own, committed.
      const [early, late] = [id(), id()];
      await store.upsert(row('RefreshToken', early, 'g3'));
      let lateWrite: Promise<void> | undefined;
      await within(true, async () => {
        await store.consume('RefreshToken', early, now());
        setTimeout(() => (lateWrite = store.upsert(row('AccessToken', late, 'g3'))), 20);
      });
      await new Promise((resolve) => setTimeout(resolve, 50));
      await lateWrite;
      expect(await stored('AccessToken', late)).toBeDefined();
    } finally {
      await outside.end();
      await db.close();
      await database.cleanup();
    }
  });
});

// Two processes on one PostgreSQL database: each request holds its redemption until it ends, and
// stores it with what it issued in one statement, or, when it wrote more than new rows, in one
// transaction.
describe.skipIf(!(await postgresAvailable()))('two PostgreSQL stores redeeming at once', () => {
  const id = () => Math.random().toString(36).slice(2);
  const row = (model: string, key: string, grantId: string): PayloadRow => ({ model, id: key, payload: JSON.stringify({ grantId }), grant_id: grantId, user_code: null, uid: null, expires_at: null });
  const now = () => Math.floor(Date.now() / 1000);
  let database: Awaited<ReturnType<typeof tempPostgres>>;
  let dbs: Database[];
  let outside: pg.Client;

  beforeAll(async () => {
    database = await tempPostgres();
    dbs = [openDatabase(database.url), openDatabase(database.url)];
    await migrate(dbs[0]!);
    outside = new pg.Client({ connectionString: database.url });
    await outside.connect();
  });
  afterAll(async () => {
    await outside?.end();
    for (const db of dbs ?? []) await db.close();
    await database?.cleanup();
  });

  const storeOn = (db: Database) => {
    const serving = new AsyncLocalStorage<object>();
    const store = createPayloadStore(db.knex, () => serving.getStore());
    const within = (respond: () => Promise<void>) => {
      const request = {};
      return serving.run(request, () => store.redeemingIn(request, respond, () => true));
    };
    return { store, within };
  };
  const stored = async (model: string, key: string) => (await outside.query('SELECT consumed_at FROM oidc_payloads WHERE model = $1 AND id = $2', [model, key])).rows[0] as { consumed_at: string | null } | undefined;
  /** A request that redeems `token`, then does `writes`, and ends when told to. */
  const paused = ({ store, within }: ReturnType<typeof storeOn>, token: string, writes: () => Promise<void>) => {
    let end!: () => void;
    const told = new Promise<void>((resolve) => (end = resolve));
    const done = within(async () => {
      expect(await store.consume('RefreshToken', token, now())).toBe(true);
      await writes();
      await told;
    });
    return { done, end };
  };

  it('stores the first redemption to end with the tokens it issued, refuses the second and revokes the grant', async () => {
    const [a, b] = [storeOn(dbs[0]!), storeOn(dbs[1]!)];
    const [token, byA, byB] = [id(), id(), id()];
    await a.store.upsert(row('RefreshToken', token, 'g1'));
    const first = paused(a, token, () => a.store.upsert(row('AccessToken', byA, 'g1')));
    const second = paused(b, token, () => b.store.upsert(row('AccessToken', byB, 'g1')));
    await new Promise((resolve) => setTimeout(resolve, 10));
    // Neither has stored anything yet: the token is unused as far as PostgreSQL knows.
    expect(await stored('RefreshToken', token)).toEqual({ consumed_at: null });
    first.end();
    await first.done;
    expect(await stored('AccessToken', byA)).toEqual({ consumed_at: null });
    expect((await stored('RefreshToken', token))?.consumed_at).not.toBeNull();
    second.end();
    await expect(second.done).rejects.toBeInstanceOf(AlreadyRedeemed);
    expect(await stored('AccessToken', byB)).toBeUndefined();
    expect(await stored('AccessToken', byA)).toBeUndefined();
    expect(await stored('RefreshToken', token)).toBeUndefined();
  });

  it('stores a redemption that also removed a row in one transaction, and none of it when it lost', async () => {
    const [a, b] = [storeOn(dbs[0]!), storeOn(dbs[1]!)];
    const [token, issued, removed, kept] = [id(), id(), id(), id()];
    await a.store.upsert(row('RefreshToken', token, 'g2'));
    await a.store.upsert(row('Session', removed, 'g2'));
    await a.store.upsert(row('Session', kept, 'g2'));
    const winner = paused(a, token, async () => {
      await a.store.upsert(row('AccessToken', issued, 'g2'));
      await a.store.destroy('Session', removed);
      // Held in the request, which reads it as gone; PostgreSQL still has it.
      expect(await a.store.find('Session', 'id', removed)).toBeUndefined();
      expect(await stored('Session', removed)).toBeDefined();
    });
    const loser = paused(b, token, () => b.store.destroy('Session', kept));
    await new Promise((resolve) => setTimeout(resolve, 10));
    winner.end();
    await winner.done;
    expect(await stored('AccessToken', issued)).toEqual({ consumed_at: null });
    expect(await stored('Session', removed)).toBeUndefined();
    loser.end();
    await expect(loser.done).rejects.toBeInstanceOf(AlreadyRedeemed);
    // The loser's removal was not stored; the grant's revocation then removed its rows.
    expect(await outside.query(`SELECT id FROM oidc_payloads WHERE grant_id = 'g2'`)).toMatchObject({ rowCount: 0 });
  });
});

// On SQLite a request's redemption waits in the request with what it writes after it, and goes
// to the database with them in one savepoint of a group commit: a crash in between loses nothing.
describe('the SQLite store inside one redemption', () => {
  const id = () => Math.random().toString(36).slice(2);
  const row = (model: string, key: string, grantId: string): PayloadRow => ({ model, id: key, payload: JSON.stringify({ grantId }), grant_id: grantId, user_code: null, uid: null, expires_at: null });
  const now = () => Math.floor(Date.now() / 1000);
  let file: ReturnType<typeof tempSqlite>;
  let dbs: Database[];
  let outside: { prepare(sql: string): { get(...params: unknown[]): unknown }; close(): void };

  beforeEach(async () => {
    file = tempSqlite();
    dbs = [openDatabase(file.url), openDatabase(file.url)];
    await migrate(dbs[0]!);
    // A connection of the test's own: what is committed, as another process sees it.
    outside = new (createRequire(import.meta.url)('better-sqlite3'))(file.url, { readonly: true });
  });
  afterEach(async () => {
    outside.close();
    for (const db of dbs) await db.close();
    file.cleanup();
  });

  /** A store on one of the database handles (two: as two processes), and a request to run in it. */
  const storeOn = (db: Database) => {
    // The request being served, as oidc-provider's Provider.ctx gives it to the shared store.
    const serving = new AsyncLocalStorage<object>();
    const store = createPayloadStore(db.knex, () => serving.getStore());
    const within = (succeeded: boolean, respond: () => Promise<void>) => {
      const request = {};
      return serving.run(request, () => store.redeemingIn(request, respond, () => succeeded));
    };
    return { store, within };
  };
  const stored = (model: string, key: string) => outside.prepare('SELECT consumed_at FROM oidc_payloads WHERE model = ? AND id = ?').get(model, key) as { consumed_at: number | null } | undefined;
  /** A request that redeems `token`, issues an access token `issued` of grant `grantId`, and ends when told to. */
  const pausedRedemption = ({ store, within }: ReturnType<typeof storeOn>, token: string, issued: string, grantId: string) => {
    let end!: () => void;
    const told = new Promise<void>((resolve) => (end = resolve));
    const done = within(true, async () => {
      expect(await store.consume('RefreshToken', token, now())).toBe(true);
      await store.upsert(row('AccessToken', issued, grantId));
      await told;
    });
    return { done, end };
  };

  it('stores the redemption and what the request wrote after it together, after it answered; nothing when it failed', async () => {
    const { store, within } = storeOn(dbs[0]!);
    const [kept, keptAccess, keptNext] = [id(), id(), id()];
    await store.upsert(row('RefreshToken', kept, 'g1'));
    await within(true, async () => {
      expect(await store.consume('RefreshToken', kept, now())).toBe(true);
      await store.upsert(row('RefreshToken', keptNext, 'g1'));
      await store.upsert(row('AccessToken', keptAccess, 'g1'));
      // The request reads what it wrote; nothing of it is in the database yet.
      expect(await store.find('AccessToken', 'id', keptAccess)).toMatchObject({ consumed_at: null });
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(stored('AccessToken', keptAccess)).toBeUndefined();
      expect(stored('RefreshToken', keptNext)).toBeUndefined();
      expect(stored('RefreshToken', kept)).toEqual({ consumed_at: null });
    });
    expect(stored('AccessToken', keptAccess)).toEqual({ consumed_at: null });
    expect(stored('RefreshToken', keptNext)).toEqual({ consumed_at: null });
    expect(stored('RefreshToken', kept)?.consumed_at).not.toBeNull();

    const [dropped, droppedAccess] = [id(), id()];
    await store.upsert(row('RefreshToken', dropped, 'g2'));
    await within(false, async () => {
      expect(await store.consume('RefreshToken', dropped, now())).toBe(true);
      await store.upsert(row('AccessToken', droppedAccess, 'g2'));
    });
    expect(stored('AccessToken', droppedAccess)).toBeUndefined();
    expect(stored('RefreshToken', dropped)).toEqual({ consumed_at: null });
    await expect(within(true, async () => {
      await store.consume('RefreshToken', dropped, now());
      throw new Error('the handler failed');
    })).rejects.toThrow('the handler failed');
    expect(stored('RefreshToken', dropped)).toEqual({ consumed_at: null });
  });

  it('stores a redemption whole through Knex when a Knex transaction holds the connection at its end, out of that one\'s rollback', async () => {
    const server = storeOn(dbs[0]!);
    const [token, issued, key] = [id(), id(), id()];
    await server.store.upsert(row('RefreshToken', token, 'g5'));
    const redemption = pausedRedemption(server, token, issued, 'g5');
    await new Promise((resolve) => setTimeout(resolve, 10));
    await dbs[0]!.knex.transaction(async (trx) => {
      await trx('server_secrets').insert({ name: `rolled-back-${key}`, value: 'x' });
      // The request ends now: its writes wait for the connection, and join no transaction of Knex.
      redemption.end();
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(stored('AccessToken', issued)).toBeUndefined();
      throw new Error('roll back');
    }).catch(() => {});
    await redemption.done;
    expect(stored('RefreshToken', token)?.consumed_at).not.toBeNull();
    expect(stored('AccessToken', issued)).toEqual({ consumed_at: null });
    expect(outside.prepare('SELECT name FROM server_secrets WHERE name = ?').get(`rolled-back-${key}`)).toBeUndefined();
  });

  it('reads whether a token is unused through Knex while a Knex transaction holds the connection: a used one is refused, an unused one claimed', async () => {
    const { store, within } = storeOn(dbs[0]!);
    const [used, unused] = [id(), id()];
    await store.upsert(row('RefreshToken', used, 'g6'));
    await store.upsert(row('RefreshToken', unused, 'g7'));
    expect(await store.consume('RefreshToken', used, now())).toBe(true);
    const claims: Record<string, boolean> = {};
    let requests: Promise<unknown> = Promise.resolve();
    await dbs[0]!.knex.transaction(async (trx) => {
      await trx('oidc_payloads').first('id');
      requests = Promise.all([used, unused].map((token) => within(true, async () => {
        claims[token] = await store.consume('RefreshToken', token, now());
      })));
      await new Promise((resolve) => setTimeout(resolve, 20));
      // Both wait for the connection, as any query through Knex.
      expect(claims).toEqual({});
    });
    await requests;
    expect(claims).toEqual({ [used]: false, [unused]: true });
    expect(stored('RefreshToken', unused)?.consumed_at).not.toBeNull();
  });

  it('lets the first of two requests that redeemed one token at once in the same process to end win, and refuses the other', async () => {
    const server = storeOn(dbs[0]!);
    const [token, issued] = [id(), id()];
    await server.store.upsert(row('RefreshToken', token, 'g3'));
    const first = pausedRedemption(server, token, issued, 'g3');
    await new Promise((resolve) => setTimeout(resolve, 10));
    // Both found it unused; the one that ends first stores its redemption and wins.
    await server.within(true, async () => {
      expect(await server.store.consume('RefreshToken', token, now())).toBe(true);
    });
    expect(stored('RefreshToken', token)?.consumed_at).not.toBeNull();
    first.end();
    // The other finds it used at its end: it stores nothing it issued, and revokes the grant.
    await expect(first.done).rejects.toBeInstanceOf(AlreadyRedeemed);
    expect(stored('AccessToken', issued)).toBeUndefined();
    expect(stored('RefreshToken', token)).toBeUndefined();
  });

  it('refuses the second of two processes that redeemed one token at once, and revokes the grant', async () => {
    const [a, b] = [storeOn(dbs[0]!), storeOn(dbs[1]!)];
    const [token, issuedByA, issuedByB] = [id(), id(), id()];
    await a.store.upsert(row('RefreshToken', token, 'g4'));
    const first = pausedRedemption(a, token, issuedByA, 'g4');
    await new Promise((resolve) => setTimeout(resolve, 10));
    // The other process finds the token unused too: neither has stored its redemption yet.
    const second = pausedRedemption(b, token, issuedByB, 'g4');
    await new Promise((resolve) => setTimeout(resolve, 10));
    first.end();
    await first.done;
    expect(stored('AccessToken', issuedByA)).toEqual({ consumed_at: null });
    second.end();
    await expect(second.done).rejects.toBeInstanceOf(AlreadyRedeemed);
    // B stored nothing it issued, and revoked the grant: A's token goes too, as for any reuse.
    expect(stored('AccessToken', issuedByB)).toBeUndefined();
    expect(stored('AccessToken', issuedByA)).toBeUndefined();
    expect(stored('RefreshToken', token)).toBeUndefined();
  });
});

describe.skipIf(!(await postgresAvailable()))('transactions held by requests, on a pool of two connections', () => {
  it('leave one connection for other queries: a second transaction waits for a slot, not for the pool', async () => {
    const database = await tempPostgres();
    const knex = knexFactory({ client: 'pg', connection: database.url, pool: { min: 0, max: 2, acquireTimeoutMillis: 2000 } });
    try {
      const first = await beginPgTransaction(knex);
      let secondOpened = false;
      const second = beginPgTransaction(knex).then((t) => {
        secondOpened = true;
        return t;
      });
      // The holder of the slot can still read outside its transaction, as a request may.
      expect((await knex.raw('SELECT 1 AS one')).rows[0].one).toBe(1);
      expect(secondOpened).toBe(false);
      await first.end(true);
      await (await second).end(false);
      expect(secondOpened).toBe(true);
    } finally {
      await knex.destroy();
      await database.cleanup();
    }
  });
});

const backends = [
  { name: 'SQLite', available: true, database: async () => ({ url: undefined, cleanup: async () => {} }) },
  { name: 'PostgreSQL', available: await postgresAvailable(), database: async () => tempPostgres() },
];

for (const backend of backends) {
  // oidc-provider rotates a refresh token before it resolves the requested resource: a request
  // refused after that must not cost the client its token, nor revoke its grant when it retries.
  describe.skipIf(!backend.available)(`a token request refused after its redemption, on ${backend.name}`, () => {
    const redirectUri = 'http://127.0.0.1:8787/callback';
    let as: TestAuthServer;
    let cleanup: () => Promise<void>;
    let basic: [string, string];
    let user: { email: string; password: string };
    let clientId: string;

    beforeAll(async () => {
      const database = await backend.database();
      cleanup = database.cleanup;
      as = await startAuthServer({ databaseUrl: database.url });
      const client = await as.createClient({ redirectUris: [redirectUri] });
      clientId = client.client_id;
      basic = [client.client_id, client.client_secret!];
      user = await as.createUser();
    });
    afterAll(async () => {
      await as?.close({ removeDatabase: true });
      await cleanup?.();
    });

    const code = async () => {
      const { redirect } = await authorize({ issuer: as.url, clientId, redirectUri, scope: 'openid offline_access read', email: user.email, password: user.password });
      return redirect.searchParams.get('code')!;
    };
    const refresh = (refreshToken: unknown, extra: Record<string, string> = {}) => tokenRequest(as.url, { grant_type: 'refresh_token', refresh_token: String(refreshToken), ...extra }, { basic });

    it('lets one of two simultaneous uses of a refresh token win, and then revokes the grant', async () => {
      const issued = await tokenRequest(as.url, { grant_type: 'authorization_code', code: await code(), redirect_uri: redirectUri }, { basic });
      expect(issued.status, JSON.stringify(issued.body)).toBe(200);
      const results = await Promise.all([refresh(issued.body.refresh_token), refresh(issued.body.refresh_token)]);
      const winners = results.filter((r) => r.status === 200);
      expect(winners, JSON.stringify(results)).toHaveLength(1);
      expect(results.find((r) => r.status !== 200)).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
      // The loser found the token used and revoked the grant, what the winner was issued included.
      expect(await refresh(winners[0]!.body.refresh_token)).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    });

    it('leaves the refresh token usable after an unknown resource, and still detects a reused one', async () => {
      const issued = await tokenRequest(as.url, { grant_type: 'authorization_code', code: await code(), redirect_uri: redirectUri }, { basic });
      expect(issued.status, JSON.stringify(issued.body)).toBe(200);

      const refused = await refresh(issued.body.refresh_token, { resource: 'https://unknown.example/' });
      expect(refused).toMatchObject({ status: 400, body: { error: 'invalid_target' } });
      const retried = await refresh(issued.body.refresh_token);
      expect(retried.status, JSON.stringify(retried.body)).toBe(200);

      // The token given back was then used once: presenting it again is reuse, and revokes the grant.
      expect(await refresh(issued.body.refresh_token)).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
      expect(await refresh(retried.body.refresh_token)).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    });

    it('leaves an authorization code redeemable after an unknown resource', async () => {
      const authorizationCode = await code();
      const refused = await tokenRequest(as.url, { grant_type: 'authorization_code', code: authorizationCode, redirect_uri: redirectUri, resource: 'https://unknown.example/' }, { basic });
      expect(refused).toMatchObject({ status: 400, body: { error: 'invalid_target' } });
      const retried = await tokenRequest(as.url, { grant_type: 'authorization_code', code: authorizationCode, redirect_uri: redirectUri }, { basic });
      expect(retried.status, JSON.stringify(retried.body)).toBe(200);
    });
  });
}
