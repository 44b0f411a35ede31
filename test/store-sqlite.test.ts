import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { KnexAdapter } from '../adapters/knex-adapter.ts';
import { createClientCache } from '../adapters/client-cache.ts';
import { migrate, openDatabase, type Database } from '../src/db/knex.ts';
import { tempSqlite } from './harness.ts';

const id = () => Math.random().toString(36).slice(2);
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));
// better-sqlite3 ships no types: the parts of a connection used here.
type RawConnection = { prepare(sql: string): { run(...params: unknown[]): unknown; get(): unknown }; readonly inTransaction: boolean; close(): void };
// A connection of the test's own, as another program (an operator's sqlite3 shell) would open one.
const Sqlite = createRequire(import.meta.url)('better-sqlite3') as new (file: string, options?: { timeout?: number }) => RawConnection;

// What the SQLite fast path (prepared statements, group commit, row and client caches) promises
// beyond the adapter contract: durability, isolation from Knex transactions, and exact caches.
describe('the SQLite token store', () => {
  let file: ReturnType<typeof tempSqlite>;
  let server: Database;
  let other: Database;
  const adapter = (model: string, db: Database = server) => new KnexAdapter(db.knex, model);

  beforeEach(async () => {
    file = tempSqlite();
    server = openDatabase(file.url);
    await migrate(server);
    // Another process (the CLI) on the same file.
    other = openDatabase(file.url);
    // The fast path borrows the connection once it is open: let it.
    await adapter('AccessToken').find('warm-up');
    await adapter('AccessToken', other).find('warm-up');
    await nextTurn();
  });
  afterEach(async () => {
    await other.close();
    await server.close();
    file.cleanup();
  });

  it('has committed a token when its upsert resolves: another connection reads it at once', async () => {
    const keys = Array.from({ length: 20 }, id);
    await Promise.all(keys.map((key) => adapter('AccessToken').upsert(key, { jti: key }, 60)));
    for (const key of keys) expect(await adapter('AccessToken', other).find(key)).toEqual({ jti: key });
  });

  it('applies writes of one turn in the order they were made', async () => {
    const grantId = id();
    const code = id();
    const token = id();
    const results = await Promise.allSettled([
      adapter('AuthorizationCode').upsert(code, { grantId }, 60),
      adapter('AuthorizationCode').consume(code),
      adapter('AccessToken').upsert(token, { grantId }, 60),
      adapter('RefreshToken').revokeByGrantId(grantId),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
    // The revocation came last, so it removed what was written before it, on disk too.
    expect(await adapter('AccessToken', other).find(token)).toBeUndefined();
    expect(await adapter('AuthorizationCode', other).find(code)).toBeUndefined();
    expect(await adapter('AccessToken').find(token)).toBeUndefined();
  });

  it('keeps a token out of a Knex transaction that is open meanwhile: the rollback does not take it', async () => {
    const key = id();
    let issued: Promise<void> | undefined;
    await server.knex.transaction(async (trx) => {
      await trx('server_secrets').insert({ name: `rolled-back-${key}`, value: 'x' });
      issued = adapter('AccessToken').upsert(key, { jti: key }, 60);
      await new Promise((resolve) => setTimeout(resolve, 20));
      throw new Error('roll back');
    }).catch(() => {});
    await issued;
    expect(await server.knex('server_secrets').first().where({ name: `rolled-back-${key}` })).toBeUndefined();
    expect(await adapter('AccessToken', other).find(key)).toEqual({ jti: key });
  });

  it('forgets a client deleted in this process before the next lookup', async () => {
    const clientId = id();
    await adapter('Client').upsert(clientId, { client_id: clientId });
    expect(await adapter('Client').find(clientId)).toEqual({ client_id: clientId });
    await adapter('Client').destroy(clientId);
    expect(await adapter('Client').find(clientId)).toBeUndefined();
  });

  it('sees a client deleted and a grant revoked by another process from the next turn on', async () => {
    const clientId = id();
    const grantId = id();
    const token = id();
    await adapter('Client').upsert(clientId, { client_id: clientId });
    await adapter('AccessToken').upsert(token, { grantId }, 60);
    expect(await adapter('Client').find(clientId)).toBeDefined();
    expect(await adapter('AccessToken').find(token)).toBeDefined();

    await adapter('Client', other).destroy(clientId);
    await adapter('AccessToken', other).revokeByGrantId(grantId);
    await nextTurn();
    expect(await adapter('Client').find(clientId)).toBeUndefined();
    expect(await adapter('AccessToken').find(token)).toBeUndefined();
  });

  it('sees a row changed through Knex in this process at once (cleanup job, tests)', async () => {
    const key = id();
    await adapter('AuthorizationCode').upsert(key, { jti: key, exp: 1 }, 60);
    expect(await adapter('AuthorizationCode').find(key)).toEqual({ jti: key, exp: 1 });
    await server.knex('oidc_payloads').where({ model: 'AuthorizationCode', id: key }).update({ payload: JSON.stringify({ jti: key, exp: 2 }) });
    expect(await adapter('AuthorizationCode').find(key)).toEqual({ jti: key, exp: 2 });
    await server.knex('oidc_payloads').where({ model: 'AuthorizationCode', id: key }).delete();
    expect(await adapter('AuthorizationCode').find(key)).toBeUndefined();
  });

  it('finds a token another process issued after this one looked for it in vain', async () => {
    const key = id();
    expect(await adapter('AccessToken').find(key)).toBeUndefined();
    await adapter('AccessToken', other).upsert(key, { jti: key }, 60);
    await nextTurn();
    expect(await adapter('AccessToken').find(key)).toEqual({ jti: key });
  });

  it('parses an access token once and hands it out frozen; a grant stays a fresh, changeable object', async () => {
    const key = id();
    await adapter('AccessToken').upsert(key, { jti: key, extra: { tenant: 'a' } }, 60);
    const first = await adapter('AccessToken').find(key);
    expect(first).toEqual({ jti: key, extra: { tenant: 'a' } });
    expect(await adapter('AccessToken').find(key)).toBe(first);
    expect(Object.isFrozen(first!.extra)).toBe(true);
    // Written again (by this process): the new payload, not the one parsed before.
    await adapter('AccessToken').upsert(key, { jti: key, extra: { tenant: 'b' } }, 60);
    expect(await adapter('AccessToken').find(key)).toEqual({ jti: key, extra: { tenant: 'b' } });

    await adapter('Grant').upsert(key, { jti: key, openid: { scope: 'openid' } }, 60);
    const grant = await adapter('Grant').find(key);
    grant!.openid = { scope: 'openid email' };
    expect(await adapter('Grant').find(key)).toEqual({ jti: key, openid: { scope: 'openid' } });
  });

  // Changes a row on the server's own connection behind the store's back: neither data_version
  // nor Knex's query events see it, so only a read from the database can find the change.
  const changeBehindTheStore = async (model: string, key: string, payload: object) => {
    const pool = server.knex.client as { acquireConnection(): Promise<RawConnection>; releaseConnection(c: RawConnection): Promise<unknown> };
    const connection = await pool.acquireConnection();
    connection.prepare('UPDATE oidc_payloads SET payload = ? WHERE model = ? AND id = ?').run(JSON.stringify(payload), model, key);
    await pool.releaseConnection(connection);
  };

  it('does not keep a token it wrote until it is read: the first read comes from the database', async () => {
    const key = id();
    // The cache is in use (it has answered a read) before the token is issued.
    expect(await adapter('AccessToken').find(id())).toBeUndefined();
    await adapter('AccessToken').upsert(key, { jti: key, n: 1 }, 60);
    await changeBehindTheStore('AccessToken', key, { jti: key, n: 2 });
    expect(await adapter('AccessToken').find(key)).toEqual({ jti: key, n: 2 });
  });

  it('does not keep a token it consumed: the next read comes from the database', async () => {
    const key = id();
    await adapter('RefreshToken').upsert(key, { jti: key, n: 1 }, 60);
    // Read once, so the row is cached before it is consumed.
    expect(await adapter('RefreshToken').find(key)).toEqual({ jti: key, n: 1 });
    await adapter('RefreshToken').consume(key);
    await changeBehindTheStore('RefreshToken', key, { jti: key, n: 2 });
    const found = await adapter('RefreshToken').find(key);
    expect(found).toMatchObject({ jti: key, n: 2 });
    expect(typeof found?.consumed).toBe('number');
  });

  it('keeps the WAL short under a steady stream of writes, without losing one', async () => {
    // WAL frames so far: the file keeps its largest size, so this is the longest the WAL has been.
    const walFrames = () => Math.floor(Math.max(0, statSync(`${file.url}-wal`).size - 32) / (4096 + 24));
    const keys: string[] = [];
    // About 14,000 frames in all, in batches of 20 tokens (one commit each) 2 ms apart, as a busy
    // server writes them: a pass of the checkpoint thread never catches up with such a stream.
    for (let batch = 0; batch < 1000; batch += 1) {
      const these = Array.from({ length: 20 }, id);
      keys.push(...these);
      await Promise.all(these.map((key) => adapter('AccessToken').upsert(key, { jti: key }, 600)));
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    // The thread finished checkpoints (at 4,096 frames) long before this connection would have
    // done so itself (10,000), holding the event loop.
    expect(walFrames()).toBeLessThan(9000);
    const count = await other.knex('oidc_payloads').where({ model: 'AccessToken' }).count({ n: '*' }).first();
    expect(Number(count?.n)).toBe(keys.length);
    for (const key of keys.slice(-50)) expect(await adapter('AccessToken', other).find(key)).toEqual({ jti: key });
  });

  it('checkpoints what a process wrote through Knex alone (keys, accounts, usage), on its thread', async () => {
    // A process of its own that writes nothing but this, as \`latchkey api\` writes API-key usage.
    const api = openDatabase(file.url);
    try {
      const before = statSync(file.url).size;
      // ~2 MiB of rows, far fewer frames than the connection's own fallback checkpoint waits for.
      await api.knex.schema.createTable('scratch', (t) => t.text('pad'));
      for (let batch = 0; batch < 20; batch += 1) {
        await api.knex('scratch').insert(Array.from({ length: 25 }, () => ({ pad: 'x'.repeat(4000) })));
      }
      // Copied into the database file, which grows to hold the new pages.
      await vi.waitFor(() => expect(statSync(file.url).size).toBeGreaterThan(before + 2 * 1024 * 1024), { timeout: 5000, interval: 50 });
    } finally {
      await api.close();
    }
  });

  /** A pragma's value as the server's connection sees it. */
  const pragma = async (name: string) => Object.values((await server.knex.raw(`PRAGMA ${name}`))[0] as object)[0];

  it('leaves checkpoints and cutting the WAL back to the checkpoint thread while it runs', async () => {
    await Promise.all(Array.from({ length: 20 }, id).map((key) => adapter('AccessToken').upsert(key, { jti: key }, 600)));
    // The server's connection never truncates the WAL, and checkpoints on a commit only as a
    // fallback, at 8 times the length the thread lets the WAL grow to (4,096 frames).
    expect(await pragma('journal_size_limit')).toBe(-1);
    expect(await pragma('wal_autocheckpoint')).toBeGreaterThanOrEqual(8 * 4096);
  });

  it("gives the server's connection SQLite's own 2 MiB page cache, not the 16 MiB better-sqlite3 builds it with", async () => {
    // As a connection better-sqlite3 opens with its defaults has it, and as the server's has it.
    const plain = new Sqlite(file.url);
    try {
      expect(plain.prepare('PRAGMA cache_size').get()).toEqual({ cache_size: -16000 });
    } finally {
      plain.close();
    }
    expect(await pragma('cache_size')).toBe(-2000);
  });

  const walBytes = () => statSync(`${file.url}-wal`).size;
  /**
   * A burst that leaves the WAL file longer than the 32 MiB it is cut back to: a reader in the
   * middle of a transaction keeps every checkpoint from passing its snapshot meanwhile, so the WAL
   * grows with it (~3 KiB rows, 12,000 of them, about 50 MiB). `atEnd` runs before that reader
   * ends. Returns the keys written.
   */
  const longWal = async (atEnd = () => {}): Promise<string[]> => {
    const reader = await other.knex.transaction();
    await reader('oidc_payloads').count({ n: '*' });
    const keys: string[] = [];
    try {
      for (let batch = 0; batch < 60; batch += 1) {
        const these = Array.from({ length: 200 }, id);
        keys.push(...these);
        await Promise.all(these.map((key) => adapter('AccessToken').upsert(key, { jti: key, pad: 'x'.repeat(3000) }, 600)));
      }
      expect(walBytes()).toBeGreaterThan(32 * 1024 * 1024);
      atEnd();
    } finally {
      await reader.commit();
    }
    return keys;
  };

  it('cuts a WAL file that a burst made long back once writes stop, on the checkpoint thread', async () => {
    const keys = await longWal();
    // The server's connection never truncates the WAL (a commit that did held the event loop for
    // 15-70 ms), and no commit comes: the thread copies the WAL to its end and cuts it back.
    await vi.waitFor(() => expect(walBytes()).toBeLessThanOrEqual(32 * 1024 * 1024), { timeout: 10_000, interval: 100 });
    const count = await other.knex('oidc_payloads').where({ model: 'AccessToken' }).count({ n: '*' }).first();
    expect(Number(count?.n)).toBe(keys.length);
    expect(await adapter('AccessToken', other).find(keys.at(-1)!)).toEqual({ jti: keys.at(-1), pad: 'x'.repeat(3000) });
  }, 30_000);

  it('keeps no writer waiting while a reader keeps it from cutting the WAL back', async () => {
    // A read transaction that began after the burst's last commit (an operator's sqlite3 shell,
    // say) does not keep the checkpoints from copying the whole WAL, but cutting it back would
    // have to wait for its end. The thread must not wait for it, holding the write lock that every
    // connection's commits need (a busy timeout of 5 s did: writers elsewhere failed with
    // SQLITE_BUSY, and this process's commits waited at the gate).
    const shell = new Sqlite(file.url);
    try {
      await longWal(() => {
        shell.prepare('BEGIN').run();
        shell.prepare('SELECT count(*) FROM oidc_payloads').get();
      });
      // Rounds in which the thread finds the WAL copied, no frame new and the file long.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      // A writer that waits 0.2 s at most for the write lock, three times in a second.
      const writer = new Sqlite(file.url, { timeout: 200 });
      try {
        for (let i = 0; i < 3; i += 1) {
          expect(() => writer.prepare('INSERT INTO oidc_payloads (model, id, payload) VALUES (?, ?, ?)').run('Session', id(), '{}')).not.toThrow();
          await new Promise((resolve) => setTimeout(resolve, 300));
        }
      } finally {
        writer.close();
      }
      expect(walBytes()).toBeGreaterThan(32 * 1024 * 1024);
    } finally {
      if (shell.inTransaction) shell.prepare('COMMIT').run();
      shell.close();
    }
    // Once the reader is gone, the next quiet round cuts the WAL back.
    await vi.waitFor(() => expect(walBytes()).toBeLessThanOrEqual(32 * 1024 * 1024), { timeout: 10_000, interval: 100 });
  }, 30_000);

  // Linux only: a thread's nice value and CPU affinity are its own there (/proc, taskset).
  const linux = process.platform === 'linux';
  const threadNices = () => readdirSync('/proc/self/task').map((tid) => {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  });

  it.runIf(linux)('checkpoints on a thread of the lowest priority', async () => {
    // The thread lowers itself once it has started.
    await vi.waitFor(() => expect(threadNices()).toContain(19), { timeout: 5000 });
  });

  it.runIf(linux)('starts the WAL over again and again while the event loop keeps its core busy with writes', async (ctx) => {
    // This process on one core, as on a one-CPU machine, where the checkpoint thread (nice 19)
    // gets the core when the event loop waits, which this loop of writes never does. And this
    // thread at nice -20 where that is allowed (root): against nice 0 the checkpoint thread still
    // gets ~1.4% of the core, which here was enough to finish checkpoints anyway.
    const nice = os.getPriority();
    try {
      os.setPriority(-20);
    } catch {
      return ctx.skip();
    }
    const taskset = spawnSync('taskset', ['-c', '-p', String(process.pid)], { encoding: 'utf8' });
    const cpus = /list: (\S+)/.exec(taskset.stdout ?? '')?.[1];
    if (cpus) spawnSync('taskset', ['-a', '-c', '-p', cpus.split(/[,-]/)[0]!, String(process.pid)]);
    try {
      // The WAL header's checkpoint sequence number goes up each time the WAL starts over, which it
      // does only once a checkpoint has copied all of it.
      const header = Buffer.alloc(16);
      const startedOver = () => {
        const fd = openSync(`${file.url}-wal`, 'r');
        try {
          readSync(fd, header, 0, 16, 0);
        } finally {
          closeSync(fd);
        }
        return header.readUInt32BE(12);
      };
      const before = startedOver();
      // Rows of ~0.7 frames each, until the WAL started over twice (or 300,000 rows, ~4 s). The
      // thread starves: this connection's fallback checkpoints the WAL once it is 32,768 frames
      // long, and once the thread ran no round for two seconds of this saturated loop, at 10,000
      // frames, and the loop waits for the thread to run one every two seconds.
      for (let written = 0; written < 300_000 && startedOver() - before < 2; written += 50) {
        await Promise.all(Array.from({ length: 50 }, id).map((key) => adapter('AccessToken').upsert(key, { jti: key }, 600)));
      }
      expect(startedOver() - before).toBeGreaterThanOrEqual(2);
    } finally {
      if (cpus) spawnSync('taskset', ['-a', '-c', '-p', cpus, String(process.pid)]);
      os.setPriority(nice);
    }
  }, 60_000);

  it('reports a consumed token as consumed after it was cached', async () => {
    const key = id();
    await adapter('RefreshToken').upsert(key, { jti: key }, 60);
    expect((await adapter('RefreshToken').find(key))?.consumed).toBeUndefined();
    await adapter('RefreshToken').consume(key);
    expect(typeof (await adapter('RefreshToken').find(key))?.consumed).toBe('number');
    expect(typeof (await adapter('RefreshToken', other).find(key))?.consumed).toBe('number');
  });
});

describe('the client cache without a change signal (PostgreSQL)', () => {
  it('hands out frozen metadata, so no request can change what the next one sees', () => {
    const cache = createClientCache(undefined);
    cache.set('c1', { client_id: 'c1', redirect_uris: ['http://127.0.0.1/cb'] }, cache.beforeRead());
    const cached = cache.get('c1')!;
    expect(() => {
      (cached.redirect_uris as string[]).push('https://evil.example/cb');
    }).toThrow(TypeError);
    expect(cache.get('c1')).toEqual({ client_id: 'c1', redirect_uris: ['http://127.0.0.1/cb'] });
  });

  it('trusts an entry for two seconds at most', () => {
    let now = 0;
    const cache = createClientCache(undefined, () => now);
    cache.set('c1', { client_id: 'c1' }, cache.beforeRead());
    now = 1999;
    expect(cache.get('c1')).toEqual({ client_id: 'c1' });
    now = 2000;
    expect(cache.get('c1')).toBeUndefined();
  });

  it('does not keep what a read returned when the client changed during the read', () => {
    const cache = createClientCache(undefined);
    const ticket = cache.beforeRead();
    cache.forget('c1');
    cache.set('c1', { client_id: 'c1' }, ticket);
    expect(cache.get('c1')).toBeUndefined();
  });
});
