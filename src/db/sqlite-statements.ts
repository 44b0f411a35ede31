import type { Knex } from 'knex';

// The parts of a better-sqlite3 connection used here (the package ships no types).
export interface Statement {
  run(...params: unknown[]): { changes: number };
  get(...params: unknown[]): unknown;
}
interface SqliteConnection {
  readonly open: boolean;
  readonly inTransaction: boolean;
  prepare(sql: string): Statement;
}

export interface SqliteStatements {
  /** Whether the connection is ours to use right now: open, and no Knex transaction on it. */
  usable(): boolean;
  /** Whether a transaction is open on the connection (to roll back after a failed batch). */
  inTransaction(): boolean;
  /** The statement for `sql`, prepared once per connection. Only while `usable()`. */
  prepare(sql: string): Statement;
}

/** Whether this Knex handle talks to SQLite through better-sqlite3. */
export const isBetterSqlite = (knex: Knex): boolean => (knex.client as { driverName?: string }).driverName === 'better-sqlite3';

/**
 * Prepared statements on the better-sqlite3 connection Knex opened (its pool holds one), run
 * synchronously: this skips Knex's query building and pool, ~25-35 µs a query. The connection is
 * borrowed, not owned: while a Knex transaction holds it, a statement would join that transaction,
 * so `usable()` is false and callers take their Knex path instead.
 */
export function sqliteStatements(knex: Knex): SqliteStatements {
  let connection: SqliteConnection | undefined;
  let connecting: Promise<void> | undefined;
  const prepared = new Map<string, Statement>();

  const connect = () => {
    connecting ??= (async () => {
      const client = knex.client as { acquireConnection(): Promise<SqliteConnection>; releaseConnection(c: SqliteConnection): Promise<unknown> };
      const acquired = await client.acquireConnection();
      // Hand it straight back: Knex keeps using it too; statements here only run between awaits.
      await client.releaseConnection(acquired);
      if (acquired !== connection) prepared.clear();
      connection = acquired;
    })().catch(() => {
      // The Knex path keeps working (and reports the problem); the next call tries again.
    }).finally(() => {
      connecting = undefined;
    });
  };
  connect();

  return {
    usable() {
      if (!connection?.open) {
        connect();
        return false;
      }
      return !connection.inTransaction;
    },
    inTransaction: () => connection?.inTransaction === true,
    prepare(sql) {
      let statement = prepared.get(sql);
      if (!statement) prepared.set(sql, (statement = connection!.prepare(sql)));
      return statement;
    },
  };
}
