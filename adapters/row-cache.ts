import type { StoredPayload } from './payload-store.ts';

export interface CachedRow extends StoredPayload {
  grant_id: string | null;
}

const MAX_ROWS = 5_000;

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
 * Bounded: the rows cached longest ago go first (a hit does not reorder the cache, which would
 * cost two more Map operations on every lookup); a row evicted while still in use is read again.
 */
export function createRowCache() {
  // null: known not to exist (introspection looks a token up in several models; most miss).
  const rows = new Map<string, CachedRow | null>();
  let version: number | undefined;
  const key = (model: string, id: string) => `${model}\u0000${id}`;
  const sync = (current: number) => {
    if (current !== version) {
      rows.clear();
      version = current;
    }
  };

  return {
    /** The row, null when it is known not to exist, undefined when it must be read. */
    get(model: string, id: string, current: number): CachedRow | null | undefined {
      sync(current);
      return rows.get(key(model, id));
    },
    set(model: string, id: string, row: CachedRow | null, current: number): void {
      sync(current);
      const k = key(model, id);
      rows.delete(k);
      rows.set(k, row);
      if (rows.size > MAX_ROWS) rows.delete(rows.keys().next().value!);
    },
    /** After this process committed an upsert, a consume or a delete: read the row again when asked for. */
    written(model: string, id: string): void {
      rows.delete(key(model, id));
    },
    /** Rare (logout, code or refresh-token reuse): a scan is cheaper than keeping an index. */
    grantRevoked(grantId: string): void {
      rows.delete(key('Grant', grantId));
      for (const [k, row] of rows) if (row?.grant_id === grantId) rows.delete(k);
    },
  };
}

export type RowCache = ReturnType<typeof createRowCache>;
