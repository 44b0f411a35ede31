import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KnexAdapter, removeExpiredRows } from '../adapters/knex-adapter.ts';
import { migrate, openDatabase, type Database } from '../src/db/knex.ts';
import { postgresAvailable, tempPostgres, tempSqlite } from './harness.ts';

interface Backend {
  name: string;
  open(): Promise<{ db: Database; cleanup(): Promise<void> }>;
  available(): Promise<boolean>;
}

const backends: Backend[] = [
  {
    name: 'SQLite',
    available: async () => true,
    async open() {
      const file = tempSqlite();
      const db = openDatabase(file.url);
      return { db, cleanup: async () => { await db.close(); file.cleanup(); } };
    },
  },
  {
    name: 'PostgreSQL',
    available: postgresAvailable,
    async open() {
      const pg = await tempPostgres();
      const db = openDatabase(pg.url);
      return { db, cleanup: async () => { await db.close(); await pg.cleanup(); } };
    },
  },
];

const id = () => Math.random().toString(36).slice(2);

// The oidc-provider adapter contract, run against every database Latchkey supports.
for (const backend of backends) {
  const available = await backend.available();
  describe.skipIf(!available)(`the oidc-provider adapter on ${backend.name}`, () => {
    let db: Database;
    let cleanup: () => Promise<void>;
    const adapter = (model: string) => new KnexAdapter(db.knex, model);

    beforeAll(async () => {
      ({ db, cleanup } = await backend.open());
      await migrate(db);
    });
    afterAll(() => cleanup?.());

    it('stores and finds a payload, and an upsert replaces it', async () => {
      const a = adapter('AccessToken');
      const key = id();
      await a.upsert(key, { jti: key, kind: 'AccessToken', grantId: 'g1', scope: 'read' }, 60);
      expect(await a.find(key)).toEqual({ jti: key, kind: 'AccessToken', grantId: 'g1', scope: 'read' });
      await a.upsert(key, { jti: key, kind: 'AccessToken', grantId: 'g1', scope: 'write' }, 60);
      expect((await a.find(key))?.scope).toBe('write');
    });

    it('keeps models apart: the same id in two models is two records', async () => {
      const key = id();
      await adapter('AccessToken').upsert(key, { kind: 'AccessToken' }, 60);
      expect(await adapter('RefreshToken').find(key)).toBeUndefined();
    });

    it('stores payloads without an expiry (registered clients)', async () => {
      const key = id();
      await adapter('Client').upsert(key, { client_id: key }, undefined as unknown as number);
      expect(await adapter('Client').find(key)).toEqual({ client_id: key });
    });

    it('finds a session by uid and a device code by user code', async () => {
      const uid = id();
      await adapter('Session').upsert(id(), { uid, accountId: 'usr_1' }, 60);
      expect((await adapter('Session').findByUid(uid))?.accountId).toBe('usr_1');
      const userCode = id();
      await adapter('DeviceCode').upsert(id(), { userCode, kind: 'DeviceCode' }, 60);
      expect((await adapter('DeviceCode').findByUserCode(userCode))?.userCode).toBe(userCode);
      expect(await adapter('Session').findByUid('nope')).toBeUndefined();
    });

    it('marks a payload consumed once, and a second consume fails and revokes its grant', async () => {
      const code = adapter('AuthorizationCode');
      const grantId = id();
      const key = id();
      await code.upsert(key, { grantId }, 60);
      await adapter('AccessToken').upsert(id(), { grantId }, 60);
      await adapter('Grant').upsert(grantId, { accountId: 'usr_1' }, 60);
      await code.consume(key);
      expect(typeof (await code.find(key))?.consumed).toBe('number');
      await expect(code.consume(key)).rejects.toMatchObject({ error: 'invalid_grant' });
      expect(await adapter('Grant').find(grantId)).toBeUndefined();
    });

    it('lets exactly one of twenty concurrent consumes win', async () => {
      const rt = adapter('RefreshToken');
      const key = id();
      await rt.upsert(key, { grantId: id() }, 60);
      const results = await Promise.allSettled(Array.from({ length: 20 }, () => rt.consume(key)));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    });

    it('destroys a payload', async () => {
      const a = adapter('Interaction');
      const key = id();
      await a.upsert(key, { uid: key }, 60);
      await a.destroy(key);
      expect(await a.find(key)).toBeUndefined();
    });

    it('revokes every model\'s payloads of a grant, and the grant, but nothing else', async () => {
      const grantId = id();
      const keep = id();
      const keys = { AccessToken: id(), RefreshToken: id(), AuthorizationCode: id() };
      for (const [model, key] of Object.entries(keys)) await adapter(model).upsert(key, { grantId }, 60);
      await adapter('Grant').upsert(grantId, { accountId: 'usr_1' }, 60);
      await adapter('AccessToken').upsert(keep, { grantId: id() }, 60);
      await adapter('RefreshToken').revokeByGrantId(grantId);
      for (const [model, key] of Object.entries(keys)) expect(await adapter(model).find(key)).toBeUndefined();
      expect(await adapter('Grant').find(grantId)).toBeUndefined();
      expect(await adapter('AccessToken').find(keep)).toBeDefined();
    });

    it('removes expired rows in the cleanup pass and keeps live ones', async () => {
      const live = id();
      await adapter('AccessToken').upsert(live, { jti: live }, 3600);
      const stale = id();
      await adapter('AccessToken').upsert(stale, { jti: stale }, 60);
      await db.knex('oidc_payloads').where({ id: stale }).update({ expires_at: Math.floor(Date.now() / 1000) - 1 });
      expect(await removeExpiredRows(db.knex)).toBeGreaterThanOrEqual(1);
      expect(await adapter('AccessToken').find(stale)).toBeUndefined();
      expect(await adapter('AccessToken').find(live)).toBeDefined();
    });
  });
}
