import type { Knex } from 'knex';
import { createBatchMap } from './batch-map.ts';

/** The tables of the rows kept: oidc-provider's grants (oidc_payloads rows of model Grant), and users. */
export const GRANTS = 'oidc_payloads:Grant';
export const USERS = 'users';

/**
 * Rows a PostgreSQL query read beside the row it was asked for, for the reads of them that follow
 * in the same turn of the event loop: oidc-provider reads a refresh token, then its grant, then
 * the grant's account, one round trip each, though the first read can bring all three (the
 * payload store's PG_FIND_WITH_GRANT). Such a row is handed out as if it had been read at the
 * same moment as the row it came with, and forgotten at the turn's end (setImmediate), or at once
 * when this process writes it.
 */
export interface ReadTogether {
  keep(table: string, id: string, row: object | null): void;
  /** The row kept for (table, id) in this turn: null when it was found missing, undefined when none was kept. */
  get<T extends object>(table: string, id: string): T | null | undefined;
  /** This process is writing or removing the row: the next read of it goes to the database. */
  forget(table: string, id: string): void;
}

function createReadTogether(): ReadTogether {
  // The rows kept in this turn, by table: a new Map each turn, not one cleared (see batch-map.ts).
  const tables = createBatchMap<string, Map<string, object | null>>(setImmediate);
  return {
    keep(table, id, row) {
      let rows = tables.get(table);
      if (!rows) tables.set(table, (rows = new Map()));
      rows.set(id, row);
    },
    get<T extends object>(table: string, id: string) {
      return tables.get(table)?.get(id) as T | null | undefined;
    },
    forget(table, id) {
      tables.get(table)?.delete(id);
    },
  };
}

const byDatabase = new WeakMap<Knex, ReadTogether>();

/** The rows read together on this database handle: the payload store keeps them, the stores of their tables read them. */
export function readTogetherFor(knex: Knex): ReadTogether {
  let reads = byDatabase.get(knex);
  if (!reads) byDatabase.set(knex, (reads = createReadTogether()));
  return reads;
}
