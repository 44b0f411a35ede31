import { AsyncLocalStorage } from 'node:async_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenRequest } from './flows.ts';
import { postgresAvailable, startAuthServer, tempPostgres, watchContexts, type TestAuthServer } from './harness.ts';

v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

// src/db/knex.ts (poolOutsideRequests): Knex's pool takes and gives back connections outside the
// context of the request that asked. Without that, the pool's entry for each connection given
// back, and the socket of each connection opened for a request, kept that request's whole Koa
// context alive (oidc-provider's AsyncLocalStorage store) until the connection was used again or
// closed.
describe.skipIf(!(await postgresAvailable()))('the database pool on PostgreSQL', () => {
  let database: Awaited<ReturnType<typeof tempPostgres>>;
  let as: TestAuthServer;
  let service: [string, string];
  const contexts: WeakRef<object>[] = [];
  let watched: Awaited<ReturnType<typeof watchContexts>>;
  let url: string;

  beforeAll(async () => {
    database = await tempPostgres();
    as = await startAuthServer({ databaseUrl: database.url });
    const client = await as.createClient({ grantTypes: ['client_credentials'], scope: 'read', redirectUris: [] });
    service = [client.client_id, client.client_secret!];
    // A weak look at every request's context.
    watched = await watchContexts(as, (ctx) => contexts.push(new WeakRef(ctx)));
    url = watched.url;
  });
  afterAll(async () => {
    await watched?.close();
    await as?.close();
    await database?.cleanup();
  });

  it('keeps no request alive once it is answered, through its connections or the ones it opened', async () => {
    // Requests at once, so that the pool opens connections while they run.
    const issued = await Promise.all(Array.from({ length: 6 }, () => tokenRequest(url, { grant_type: 'client_credentials', scope: 'read' }, { basic: service })));
    expect(issued.map((res) => res.status)).toEqual(Array(6).fill(200));
    expect(contexts).toHaveLength(6);
    // The pool held several connections, each given back by one of those requests.
    const pool = (as.server.db.knex.client as { pool: { numFree(): number } }).pool;
    expect(pool.numFree()).toBeGreaterThan(1);

    // A WeakRef holds its target until the current job ends; collect after that, twice.
    await sleep(50);
    gc();
    await sleep(50);
    gc();
    expect(contexts.filter((ref) => ref.deref() !== undefined)).toHaveLength(0);
  });

  it("leaves the caller's own context as it was once its query is answered", async () => {
    const als = new AsyncLocalStorage<{ request: number }>();
    const knex = as.server.db.knex;
    const seen = await Promise.all([1, 2, 3].map((request) => als.run({ request }, async () => {
      await knex.raw('select pg_sleep(0.01)');
      const before = als.getStore()?.request;
      await knex.transaction(async (trx) => trx.raw('select 1'));
      return [before, als.getStore()?.request];
    })));
    expect(seen).toEqual([[1, 1], [2, 2], [3, 3]]);
  });
});
