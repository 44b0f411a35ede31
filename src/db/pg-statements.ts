import type { Knex } from 'knex';

export interface PgResult {
  rows: unknown[];
  rowCount: number | null;
  /** The command tag PostgreSQL answered with: `ROLLBACK` for a COMMIT of a failed transaction. */
  command?: string;
}

// The part of a `pg` client used here.
interface PgConnection {
  query(config: { name: string; text: string; values: unknown[] } | string, callback: (err: Error | null, result: PgResult) => void): void;
}

/**
 * `connection.query` with a callback, wrapped in a promise of our own. Awaiting the promise pg's
 * `client.query` returns instead, while an AsyncLocalStorage is in use (oidc-provider's is, in
 * every request), sent what the waiting requests held to V8's old generation: under load on
 * PostgreSQL a young collection promoted 44-660 KB (the most with a few requests in flight),
 * against 4-16 KB this way and on SQLite, and those requests, dead soon after, brought a full
 * collection (a 10-20 ms pause) every 2-3 s at full load. A bare node:http server with one pg
 * client reproduces it: 600-800 KB promoted per young collection with pg's promise and one
 * AsyncLocalStorage.run per request; without the AsyncLocalStorage, or with the callback, a few
 * KB. Why pg's promise does this under an AsyncLocalStorage was not established.
 * test/pg-statements.test.ts fails if statements go back to pg's promise.
 */
function send(connection: PgConnection, config: { name: string; text: string; values: unknown[] } | string): Promise<PgResult> {
  return new Promise((resolve, reject) => connection.query(config, (err, result) => (err ? reject(err) : resolve(result))));
}

interface PooledClient {
  config: { pool?: { max?: number } };
  acquireConnection(): Promise<PgConnection>;
  releaseConnection(c: PgConnection): Promise<unknown>;
}

/** Whether this Knex handle talks to PostgreSQL through `pg`. */
export const isPg = (knex: Knex): boolean => (knex.client as { driverName?: string }).driverName === 'pg';

const poolOf = (knex: Knex) => knex.client as PooledClient;

/**
 * Runs `text` as the named statement `name` on a connection from Knex's pool (so the pool's size,
 * health checks and shutdown stay Knex's): each connection parses and plans it once, then only
 * binds and executes it. Against the same statement built by Knex's query builder and sent
 * unnamed, this measured ~70 µs less of this process's CPU per upsert and ~100 µs less time per
 * call. Each statement commits on its own (autocommit) before its promise resolves.
 * A name must always stand for the same text.
 */
export function pgStatements(knex: Knex): (name: string, text: string, values: unknown[]) => Promise<PgResult> {
  const client = poolOf(knex);
  return async (name, text, values) => {
    const connection = await client.acquireConnection();
    try {
      return await send(connection, { name, text, values });
    } finally {
      await client.releaseConnection(connection);
    }
  };
}

/** A transaction on one connection of Knex's pool, running named statements like pgStatements. */
export interface PgTransaction {
  run(name: string, text: string, values: unknown[]): Promise<PgResult>;
  /** COMMIT, or ROLLBACK when `commit` is false, and hand the connection back to the pool. */
  end(commit: boolean): Promise<void>;
}

/** Per pool: how many transactions of beginPgTransaction are open, and who waits for a slot. */
const openTransactions = new WeakMap<Knex, { open: number; waiting: (() => void)[] }>();

/**
 * Opens a transaction on a connection of Knex's pool. At most all but one of the pool's connections
 * hold such a transaction at once (later callers wait for a slot, holding no connection), so a
 * request that holds one and needs a query outside it (an account, a client) always gets a
 * connection in the end instead of waiting for the pool forever.
 */
export async function beginPgTransaction(knex: Knex): Promise<PgTransaction> {
  const client = poolOf(knex);
  const limit = Math.max(1, (client.config.pool?.max ?? 10) - 1);
  let slots = openTransactions.get(knex);
  if (!slots) openTransactions.set(knex, (slots = { open: 0, waiting: [] }));
  const held = slots;
  if (held.open >= limit) await new Promise<void>((resolve) => held.waiting.push(resolve));
  else held.open += 1;
  // The slot passes straight to the next waiter, or is given back.
  const releaseSlot = () => {
    const next = held.waiting.shift();
    if (next) next();
    else held.open -= 1;
  };
  let connection: PgConnection;
  try {
    connection = await client.acquireConnection();
  } catch (err) {
    releaseSlot();
    throw err;
  }
  const giveBack = async () => {
    await client.releaseConnection(connection);
    releaseSlot();
  };
  try {
    await send(connection, 'BEGIN');
  } catch (err) {
    await giveBack();
    throw err;
  }
  let ended = false;
  return {
    run: (name, text, values) => (ended
      ? Promise.reject(new Error('the transaction has ended'))
      : send(connection, { name, text, values })),
    async end(commit) {
      if (ended) return;
      ended = true;
      const sql = commit ? 'COMMIT' : 'ROLLBACK';
      try {
        const result = await send(connection, sql);
        // PostgreSQL answers the COMMIT of a transaction in which a statement failed by rolling it back.
        if (result.command !== sql) throw new Error('the transaction was rolled back, not committed');
      } finally {
        await giveBack();
      }
    },
  };
}
