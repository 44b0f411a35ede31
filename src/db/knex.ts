import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import knexFactory, { type Knex } from 'knex';
import { migrationSource } from './migrations/index.ts';

export type Dialect = 'sqlite' | 'postgres';

export interface Database {
  knex: Knex;
  dialect: Dialect;
  close(): Promise<void>;
}

/** Accepts `postgres://...`, `sqlite:/path/file.sqlite`, or a plain file path. */
export function parseDatabaseUrl(url: string): { dialect: Dialect; target: string } {
  if (/^postgres(ql)?:\/\//.test(url)) return { dialect: 'postgres', target: url };
  const file = url.startsWith('sqlite:') ? url.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '') : url;
  if (!file) throw new Error('DATABASE_URL names no SQLite file');
  return { dialect: 'sqlite', target: file === ':memory:' ? file : path.resolve(file) };
}

export function openDatabase(url: string): Database {
  const { dialect, target } = parseDatabaseUrl(url);
  if (dialect === 'postgres') {
    const knex = knexFactory({ client: 'pg', connection: target, pool: { min: 0, max: 10 } });
    return { knex, dialect, close: () => knex.destroy() };
  }
  if (target !== ':memory:') mkdirSync(path.dirname(target), { recursive: true });
  const checkpointer = target === ':memory:' ? undefined : startCheckpointer(target);
  const knex = knexFactory({
    client: 'better-sqlite3',
    connection: { filename: target },
    useNullAsDefault: true,
    // better-sqlite3 is synchronous: one connection serves the whole process without contention.
    pool: {
      min: 1,
      max: 1,
      afterCreate(conn: { pragma(sql: string): unknown }, done: (err: Error | null, conn: unknown) => void) {
        // WAL lets readers run beside the writer (and other processes, such as the CLI);
        // NORMAL sync is durable against process crashes and is WAL's recommended setting;
        // the busy timeout waits for another process's write instead of failing at once.
        conn.pragma('journal_mode = WAL');
        conn.pragma('synchronous = NORMAL');
        conn.pragma('busy_timeout = 5000');
        conn.pragma('foreign_keys = ON');
        // Checkpoints (copying the WAL into the database file, with an fsync) run on their own
        // thread (startCheckpointer); this connection only checkpoints if that thread falls far behind.
        if (checkpointer) conn.pragma(`wal_autocheckpoint = ${FALLBACK_CHECKPOINT_PAGES}`);
        done(null, conn);
      },
    },
  });
  return {
    knex,
    dialect,
    async close() {
      await checkpointer?.stop();
      await knex.destroy();
    },
  };
}

// SQLite's default is 1000 pages (4 MiB of WAL); the checkpoint thread keeps the WAL far smaller.
const FALLBACK_CHECKPOINT_PAGES = 10_000;
const CHECKPOINT_EVERY_MS = 200;

// Runs in the checkpoint thread: a connection of its own that copies committed WAL frames into
// the database file. PASSIVE never waits for, nor blocks, the server's readers and writers.
const checkpointThread = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file);
db.pragma('synchronous = NORMAL');
const timer = setInterval(() => {
  try { db.pragma('wal_checkpoint(PASSIVE)'); } catch { /* busy or gone: the next round tries again */ }
}, workerData.everyMs);
parentPort.once('message', () => { clearInterval(timer); db.close(); parentPort.close(); });
`;

/**
 * A WAL checkpoint writes pages back to the database file and fsyncs it: milliseconds that, on the
 * server's own connection, would stall every request in flight (better-sqlite3 is synchronous).
 * A thread with its own connection does that work instead, off the event loop. Commits are
 * unaffected: each is durable in the WAL (synchronous=NORMAL) before its statement returns.
 */
function startCheckpointer(file: string): { stop(): Promise<void> } {
  const worker = new Worker(checkpointThread, {
    eval: true,
    workerData: { file, driver: createRequire(import.meta.url).resolve('better-sqlite3'), everyMs: CHECKPOINT_EVERY_MS },
  });
  // It must never keep a process alive (CLI commands close their database, but a crash must not hang).
  worker.unref();
  worker.on('error', () => {
    // Without it the server's own connection checkpoints (FALLBACK_CHECKPOINT_PAGES): slower, still correct.
  });
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return {
    async stop() {
      worker.postMessage('stop');
      const force = setTimeout(() => void worker.terminate(), 2000);
      await exited;
      clearTimeout(force);
    },
  };
}

export async function migrate(db: Database): Promise<string[]> {
  const [, applied] = await db.knex.migrate.latest({ migrationSource });
  return applied as string[];
}
