/**
 * Wraps `load` so that concurrent calls with the same key share one call (one database query,
 * one introspection round trip); a call made after it settled loads again.
 *
 * The promises in flight are kept in a Map, and the last one to settle does not delete itself: it
 * replaces the Map with an empty one. Deleting a Map's last entry makes V8 shrink its hash table,
 * and the next entry makes it build another; once the Map has lived long enough to be in V8's old
 * generation, every table it builds is allocated there too: ~150 bytes of old generation per
 * lookup, one lookup at a time. In the benchmark's API-key unknown row that was half of what the
 * companion API promoted (a sampling heap profile), and in its miss and unknown rows a full
 * collection came every 5-10 s. A Map replaced whenever it empties stays young and dies young: no
 * full collection came in those rows.
 */
export function singleFlight<K, V>(load: (key: K) => Promise<V>): (key: K) => Promise<V> {
  let pending = new Map<K, Promise<V>>();
  return (key) => {
    let promise = pending.get(key);
    if (!promise) {
      promise = load(key).finally(() => {
        // Every promise in flight is in the current Map (it is replaced only when this is its
        // one entry), so size 1 means this key's entry is the last.
        if (pending.size === 1) pending = new Map();
        else pending.delete(key);
      });
      pending.set(key, promise);
    }
    return promise;
  };
}
