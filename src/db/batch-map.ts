/**
 * A Map for what is asked for until `ends` calls back (at the turn's end with setImmediate, or at
 * process.nextTick), then dropped whole: each batch gets a new Map, never one long-lived Map that
 * is cleared, or emptied entry by entry, again and again.
 *
 * Why (V8, Node 20): once a Map has lived long enough to be in the old generation, each
 * new hash table it gets (when it is cleared, or grows or shrinks) is allocated in the old
 * generation too. A table left behind is garbage there until the next full collection, and until
 * then every young collection keeps alive what that table held, and promotes it: each batch's rows
 * went to the old generation. The rows read together for a refresh on PostgreSQL
 * (read-together.ts) did: at 400 refreshes a second, each young collection promoted 87-108 KB,
 * against 3-7 KB with a Map per batch, and full collections, with their pauses, came that much
 * more often. (src/verification/single-flight.ts met the same with a Map emptied entry by entry.)
 * test/batch-map.test.ts shows it with a Map cleared every turn.
 */
export interface BatchMap<K, V> {
  get(key: K): V | undefined;
  /** Adds to the open batch, opening one (and asking `ends` to close it) when none is open. */
  set(key: K, value: V): void;
}

export function createBatchMap<K, V>(ends: (close: () => void) => void): BatchMap<K, V> {
  let open: Map<K, V> | undefined;
  return {
    get: (key) => open?.get(key),
    set(key, value) {
      if (!open) {
        const batch = (open = new Map());
        ends(() => {
          if (open === batch) open = undefined;
        });
      }
      open.set(key, value);
    },
  };
}

/**
 * Work in flight, each piece until it settles. When the last piece settles, the Set that held them
 * is replaced by a new one rather than left to shrink entry by entry, for the same reason as above:
 * the PostgreSQL payload store's upsert batches and removals, kept so in two long-lived Sets,
 * promoted 460-810 KB per young collection at 1,200-1,700 client_credentials grants a second from
 * four connections (one grant a turn, each Set emptied after each), against 3-7 KB this way.
 * test/token-promotion.test.ts fails with such Sets.
 */
export interface InFlight {
  add(work: Promise<unknown>): void;
  /** The pieces in flight now; each resolves (never rejects) once its work settles. */
  now(): Promise<void>[];
}

export function createInFlight(): InFlight {
  let pieces = new Set<Promise<void>>();
  return {
    add(work) {
      const settled = work.then(() => {}, () => {});
      pieces.add(settled);
      void settled.then(() => {
        // A piece is always in the current Set: it is replaced only when its one piece settles.
        if (pieces.size === 1) pieces = new Set();
        else pieces.delete(settled);
      });
    },
    now: () => [...pieces],
  };
}
