import { mkdirSync } from 'node:fs';
import path from 'node:path';
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
        done(null, conn);
      },
    },
  });
  return { knex, dialect, close: () => knex.destroy() };
}

export async function migrate(db: Database): Promise<string[]> {
  const [, applied] = await db.knex.migrate.latest({ migrationSource });
  return applied as string[];
}
