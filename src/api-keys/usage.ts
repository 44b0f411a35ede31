import type { Logger } from '../logger.ts';
import type { ApiKeyEvent, ApiKeyStore, EventType, UsageBatch } from './store.ts';

export interface UsageRecorder {
  /** A request made with the key (refusals for a missing scope count too, and are also events). */
  used(keyId: string, ip: string, at: number): void;
  /** Something worth the owner's attention: a rejection, with why. */
  event(keyId: string, type: EventType, ip: string | null, detail: Record<string, unknown> | null, at: number): void;
  /** Writes what was gathered; read-your-writes for the activity log. */
  flush(): Promise<void>;
  /** Stops the timer and writes the rest. */
  close(): Promise<void>;
}

/**
 * Usage (request counts, last use, addresses, rejections) gathered in memory and written in one
 * transaction every few seconds, so accepting a key never waits for a write. What is pending when
 * the server stops is written by `close()`; a failed write is kept and tried again.
 */
export function createUsageRecorder(store: ApiKeyStore, logger: Logger, options: { flushSeconds?: number } = {}): UsageRecorder {
  let counts = new Map<string, { requests: number; lastUsedAt: number }>();
  let addresses = new Map<string, Map<string, number>>();
  let events: ({ keyId: string } & ApiKeyEvent)[] = [];
  // The same rejection again and again (a misconfigured client, a scan) is one event with a count.
  let repeats = new Map<string, { detail: Record<string, unknown> }>();
  // Addresses already written per key: the common case (a known address) then costs two lookups.
  let known = new Map<string, Set<string>>();
  let knownCount = 0;
  let writing: Promise<void> = Promise.resolve();

  let failures = 0;
  const remember = (batch: UsageBatch) => {
    for (const [keyId, ips] of batch.addresses) {
      let set = known.get(keyId);
      if (!set) known.set(keyId, (set = new Set()));
      for (const ip of ips.keys()) set.add(ip);
      knownCount += ips.size;
    }
    if (knownCount > 100_000) { // bounded; forgetting only costs a no-op insert
      known = new Map();
      knownCount = 0;
    }
  };
  /** Puts a batch that could not be written back in front of what arrived since. */
  const requeue = (batch: UsageBatch) => {
    for (const [keyId, c] of batch.counts) {
      const now = counts.get(keyId);
      counts.set(keyId, { requests: c.requests + (now?.requests ?? 0), lastUsedAt: Math.max(c.lastUsedAt, now?.lastUsedAt ?? 0) });
    }
    for (const [keyId, ips] of batch.addresses) {
      const merged = addresses.get(keyId) ?? new Map<string, number>();
      for (const [ip, at] of ips) if (!merged.has(ip)) merged.set(ip, at);
      addresses.set(keyId, merged);
    }
    events = [...batch.events, ...events];
  };
  /** One key's share of a batch, so a row that can never be written holds up only its own key. */
  const slices = (batch: UsageBatch): [string, UsageBatch][] => {
    const ids = new Set([...batch.counts.keys(), ...batch.addresses.keys(), ...batch.events.map((e) => e.keyId)]);
    return [...ids].map((id) => [id, {
      counts: new Map(batch.counts.has(id) ? [[id, batch.counts.get(id)!]] : []),
      addresses: new Map(batch.addresses.has(id) ? [[id, batch.addresses.get(id)!]] : []),
      events: batch.events.filter((e) => e.keyId === id),
    }]);
  };

  const flushNow = async () => {
    if (counts.size === 0 && addresses.size === 0 && events.length === 0) return;
    const batch: UsageBatch = { counts, addresses, events };
    counts = new Map();
    addresses = new Map();
    events = [];
    repeats = new Map();
    try {
      await store.recordUsage(batch);
      remember(batch);
      failures = 0;
      return;
    } catch (err) {
      failures += 1;
      // A passing outage (a database restart): keep everything and try again next time.
      if (failures < 3) {
        logger.error('could not record API key usage; will retry', { error: (err as Error).message });
        requeue(batch);
        return;
      }
    }
    // Failing again and again: write key by key, and give up only on what still fails.
    failures = 0;
    for (const [keyId, slice] of slices(batch)) {
      try {
        await store.recordUsage(slice);
        remember(slice);
      } catch (err) {
        logger.error('dropped API key usage that cannot be written', { key_id: keyId, requests: slice.counts.get(keyId)?.requests ?? 0, events: slice.events.length, error: (err as Error).message });
      }
    }
  };
  // Flushes never overlap: each waits for the one before it.
  const flush = () => (writing = writing.then(flushNow));

  const timer = setInterval(() => void flush(), (options.flushSeconds ?? 5) * 1000);
  timer.unref();

  return {
    used(keyId, ip, at) {
      const c = counts.get(keyId);
      if (c) {
        c.requests += 1;
        c.lastUsedAt = at;
      } else {
        counts.set(keyId, { requests: 1, lastUsedAt: at });
      }
      if (known.get(keyId)?.has(ip)) return;
      let ips = addresses.get(keyId);
      if (!ips) addresses.set(keyId, (ips = new Map()));
      if (!ips.has(ip)) ips.set(ip, at);
    },
    event(keyId, type, ip, detail, at) {
      const id = `${keyId} ${type} ${ip}`;
      const seen = repeats.get(id);
      if (seen) {
        seen.detail.count = Number(seen.detail.count) + 1;
        return;
      }
      const event = { keyId, type, ip, detail: { ...detail, count: 1 }, createdAt: at };
      repeats.set(id, event);
      events.push(event);
    },
    flush,
    async close() {
      clearInterval(timer);
      await flush();
    },
  };
}
