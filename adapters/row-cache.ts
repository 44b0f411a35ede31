import type { StoredPayload } from './payload-store.ts';

export interface CachedRow extends StoredPayload {
  grant_id: string | null;
}

export const MAX_ROWS = 5_000;

/**
 * Rows this process read lately, so that reading a token again (introspection of the same token,
 * a grant for each of its refreshes) costs no SQLite read transaction. It is exact, not a TTL
 * cache: every write of this process passes through the store and drops the rows it touched
 * after the write commits, and a commit by any other process changes the database's
 * data_version, which empties it. A row this process writes is not cached until it is read: most
 * issued tokens are never read back by this process, and caching each one kept it alive long
 * enough to reach V8's old generation, whose collections (every few seconds under load, 10-30 ms
 * with the event loop stalled) were the slowest moments of a client_credentials run. For the same
 * reason a row this process consumed (a refresh token at its one use, an authorization code) is
 * dropped, not kept with its consumed mark: it is read again only when someone replays it, and
 * then from the database, which says it was consumed. Dropping it cut V8's promotion to its old
 * generation during a refresh_token run by a third.
 * Bounded: past MAX_ROWS in all, the row the largest model cached longest ago goes (a hit does not
 * reorder the cache, which would cost two more Map operations on every lookup); a row evicted while
 * still in use is read again.
 */
export function createRowCache() {
  // One map of rows per model, keyed by id; null: known not to exist. Introspection looks one token
  // up in three models (two miss): the same id string each time, whose hash V8 computes once and
  // keeps, where a key made of model and id would be a new string to build and hash every time.
  let models = new Map<string, Map<string, CachedRow | null>>();
  let size = 0;
  let version: number | undefined;
  const sync = (current: number) => {
    if (current !== version) {
      // A new Map, not this one cleared: see src/db/batch-map.ts.
      models = new Map();
      size = 0;
      version = current;
    }
  };
  const forget = (rows: Map<string, CachedRow | null> | undefined, id: string) => {
    if (rows?.delete(id)) size -= 1;
  };
  // The model with the most rows gives up the one it cached longest ago: a model read often but
  // with few distinct rows (grants) keeps them beside one with many (tokens introspected once).
  const evictFromLargest = () => {
    let largest: Map<string, CachedRow | null> | undefined;
    for (const rows of models.values()) if (!largest || rows.size > largest.size) largest = rows;
    forget(largest, largest!.keys().next().value!);
  };

  return {
    /** The row, null when it is known not to exist, undefined when it must be read. */
    get(model: string, id: string, current: number): CachedRow | null | undefined {
      sync(current);
      return models.get(model)?.get(id);
    },
    set(model: string, id: string, row: CachedRow | null, current: number): void {
      sync(current);
      let rows = models.get(model);
      if (!rows) models.set(model, (rows = new Map()));
      forget(rows, id);
      rows.set(id, row);
      size += 1;
      if (size > MAX_ROWS) evictFromLargest();
    },
    /** After this process committed an upsert, a consume or a delete: read the row again when asked for. */
    written(model: string, id: string): void {
      forget(models.get(model), id);
    },
    /** Rare (logout, code or refresh-token reuse): a scan is cheaper than keeping an index. */
    grantRevoked(grantId: string): void {
      forget(models.get('Grant'), grantId);
      for (const rows of models.values()) for (const [id, row] of rows) if (row?.grant_id === grantId) forget(rows, id);
    },
  };
}

export type RowCache = ReturnType<typeof createRowCache>;
