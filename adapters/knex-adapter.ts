import type { Knex } from 'knex';
import { errors, type Adapter, type AdapterPayload } from 'oidc-provider';
import { createClientCache, type ClientCache } from './client-cache.ts';
import { deepFreeze } from './deep-freeze.ts';
import { alreadyConsumed, payloadStoreFor, type LookupColumn, type PayloadRow, type PayloadStore, type StoredPayload } from './payload-store.ts';

const nowSeconds = () => Math.floor(Date.now() / 1000);

/**
 * oidc-provider's storage over Knex: one table for every model, keyed by (model, id), with the
 * fields the library looks up by (grant id, session uid, device user code) indexed.
 * On SQLite: prepared statements on the server's connection, writes group-committed per turn of
 * the event loop, reads by id from an exact cache (payload-store.ts); on PostgreSQL: named
 * (prepared) statements, a turn's upserts in one. Either way every write is committed before its
 * call returns, but for the writes a token request makes after it redeemed a code or refresh
 * token, which are held until its response is ready and stored with the redemption before it is
 * sent: a credential is stored before the response that carries it.
 */
export class KnexAdapter implements Adapter {
  readonly #store: PayloadStore;
  readonly #model: string;
  /** Registered clients are read on every token request; they change rarely (see client-cache.ts). */
  readonly #clients: ClientCache | undefined;

  /** Rows of this model are parsed once and the frozen result handed out again (see parsedOnce). */
  readonly #parsesOnce: boolean;

  constructor(knex: Knex, model: string) {
    this.#store = payloadStoreFor(knex);
    this.#model = model;
    this.#clients = model === 'Client' ? clientCacheFor(knex, this.#store) : undefined;
    this.#parsesOnce = this.#store.sharesRows && READ_ONLY_MODELS.has(model);
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    const row: PayloadRow = {
      model: this.#model,
      id,
      payload: JSON.stringify(payload),
      grant_id: payload.grantId ?? null,
      user_code: payload.userCode ?? null,
      uid: payload.uid ?? null,
      expires_at: expiresIn ? nowSeconds() + expiresIn : null,
    };
    this.#clients?.forget(id);
    await this.#store.upsert(row);
    this.#clients?.forget(id);
  }

  // Not async: a row read synchronously (SQLite, see payload-store.ts) costs one settled promise,
  // not a chain of them; introspection alone looks a token up in three models.
  find(id: string): Promise<AdapterPayload | undefined> {
    if (!this.#clients) return this.#lookup('id', id);
    const cached = this.#clients.get(id);
    return cached !== undefined ? Promise.resolve(cached) : this.#readClient(id);
  }

  findByUid(uid: string): Promise<AdapterPayload | undefined> {
    return this.#lookup('uid', uid);
  }

  findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    return this.#lookup('user_code', userCode);
  }

  #lookup(column: LookupColumn, value: string): Promise<AdapterPayload | undefined> {
    try {
      const row = this.#store.find(this.#model, column, value);
      if (row instanceof Promise) return row.then(fromRow);
      return Promise.resolve(row && this.#parsesOnce ? parsedOnce(row) : fromRow(row));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  async #readClient(id: string): Promise<AdapterPayload | undefined> {
    const clients = this.#clients!;
    const ticket = clients.beforeRead();
    const payload = fromRow(await this.#store.find(this.#model, 'id', id));
    clients.set(id, payload ?? null, ticket);
    return payload;
  }

  /**
   * One conditional UPDATE: of any number of concurrent redemptions of a code or refresh token,
   * exactly one changes the row. The losers revoke the whole grant, which is what RFC 6749 §4.1.2
   * and the refresh-token reuse rules ask for: here, or, for a redemption held in its request
   * (payload-store.ts, redeemingIn), at the request's end.
   */
  async consume(id: string): Promise<void> {
    const changed = await this.#store.consume(this.#model, id, nowSeconds());
    if (!changed) {
      const grantId = await this.#store.grantIdOf(this.#model, id);
      if (grantId) await this.revokeByGrantId(grantId);
      throw new errors.InvalidGrant(alreadyConsumed(this.#model));
    }
  }

  async destroy(id: string): Promise<void> {
    this.#clients?.forget(id);
    await this.#store.destroy(this.#model, id);
    this.#clients?.forget(id);
  }

  /** Removes every token, code and session entry of the grant, and the grant itself. */
  async revokeByGrantId(grantId: string): Promise<void> {
    await this.#store.revokeByGrantId(grantId);
  }
}

const fromRow = (row: StoredPayload | undefined): AdapterPayload | undefined => (row ? toPayload(row) : undefined);

// Access tokens are never changed once issued, only read (introspection, userinfo) until they
// expire or are revoked, which removes the row. While the store keeps sharing a row object, its
// payload is parsed once and handed out frozen (introspection alone looks a token up three times).
const READ_ONLY_MODELS = new Set(['AccessToken', 'ClientCredentials']);
const parsed = new WeakMap<StoredPayload, AdapterPayload>();
function parsedOnce(row: StoredPayload): AdapterPayload {
  let payload = parsed.get(row);
  if (!payload) parsed.set(row, (payload = deepFreeze(toPayload(row))));
  return payload;
}

function toPayload(row: StoredPayload): AdapterPayload {
  // Expired rows are still returned: the library checks expiry itself and then says "expired"
  // instead of "not found"; the cleanup job removes them later.
  const payload = JSON.parse(row.payload) as AdapterPayload;
  if (row.consumed_at !== null) payload.consumed = Number(row.consumed_at);
  return payload;
}

// One client cache per database handle: the provider's adapter and the client service
// (src/clients/service.ts) share it, so a client changed in this process is forgotten at once.
const clientCaches = new WeakMap<Knex, ClientCache>();
function clientCacheFor(knex: Knex, store: PayloadStore): ClientCache {
  let cache = clientCaches.get(knex);
  if (!cache) {
    cache = createClientCache(store.changeSignal());
    clientCaches.set(knex, cache);
  }
  return cache;
}

/** Deletes expired rows now and then; the library already ignores them, this keeps the table small. */
export function startExpiredRowCleanup(knex: Knex, everySeconds = 60): () => void {
  let running = false;
  const timer = setInterval(async () => {
    if (running) return;
    running = true;
    try {
      await removeExpiredRows(knex);
    } catch {
      // The next run tries again; a failed cleanup never affects a request.
    } finally {
      running = false;
    }
  }, everySeconds * 1000);
  timer.unref();
  return () => clearInterval(timer);
}

export async function removeExpiredRows(knex: Knex): Promise<number> {
  return payloadStoreFor(knex).removeExpired(nowSeconds());
}
