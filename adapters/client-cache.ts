import type { AdapterPayload } from 'oidc-provider';
import { deepFreeze } from './deep-freeze.ts';

/**
 * Registered clients, remembered between requests. oidc-provider reads a dynamically registered
 * client through the adapter on every request that names it; clients change rarely, so the
 * payload is kept here and the database is asked again only when it may have changed:
 *
 * - a change made in this process (through the adapter, e.g. `latchkey clients delete` inside a
 *   server, or registration) forgets the entry at once;
 * - on SQLite, a change committed by any other process (the CLI) changes `PRAGMA data_version`,
 *   which is checked on every lookup, so it is seen by the very next request;
 * - where no such signal exists (PostgreSQL, shared by several servers), an entry is trusted for
 *   at most UNSIGNALLED_TTL_MS: a client deleted elsewhere stops working within that bound.
 */
export interface ClientCache {
  /** The stored client metadata (frozen), or undefined when it must be read from the database. */
  get(id: string): Readonly<AdapterPayload> | undefined;
  /** Taken just before reading from the database: what the read may be cached under. */
  beforeRead(): ReadTicket;
  /** Remembers metadata read from the database after `ticket` was taken; it is frozen here. */
  set(id: string, payload: AdapterPayload | null, ticket: ReadTicket): void;
  forget(id: string): void;
}

export interface ReadTicket {
  /** Entries forgotten so far: if any is forgotten during the read, the read may be stale. */
  generation: number;
  version: number | undefined;
}

/** A number that changes whenever another connection commits; undefined: not known right now. */
export type ChangeSignal = () => number | undefined;

const UNSIGNALLED_TTL_MS = 2_000;
const SIGNALLED_TTL_MS = 60_000;
const MAX_ENTRIES = 1_000;

interface Entry {
  payload: Readonly<AdapterPayload>;
  version: number | undefined;
  cachedAt: number;
}

export function createClientCache(changes: ChangeSignal | undefined, now: () => number = Date.now): ClientCache {
  const entries = new Map<string, Entry>();
  let generation = 0;
  const ttl = changes ? SIGNALLED_TTL_MS : UNSIGNALLED_TTL_MS;

  return {
    get(id) {
      const entry = entries.get(id);
      if (!entry) return undefined;
      const stale = now() - entry.cachedAt >= ttl || (changes !== undefined && (entry.version === undefined || changes() !== entry.version));
      if (stale) {
        entries.delete(id);
        return undefined;
      }
      return entry.payload;
    },
    beforeRead: () => ({ generation, version: changes?.() }),
    set(id, payload, ticket) {
      // Unknown ids are not remembered: a client registered elsewhere must work at once.
      if (payload === null || ticket.generation !== generation) return;
      if (entries.size >= MAX_ENTRIES) entries.delete(entries.keys().next().value!);
      entries.set(id, { payload: deepFreeze(payload), version: ticket.version, cachedAt: now() });
    },
    forget(id) {
      generation += 1;
      entries.delete(id);
    },
  };
}
