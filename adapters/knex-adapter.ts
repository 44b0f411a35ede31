import type { Knex } from 'knex';
import { errors, type Adapter, type AdapterPayload } from 'oidc-provider';

const TABLE = 'oidc_payloads';

const nowSeconds = () => Math.floor(Date.now() / 1000);

interface Row {
  payload: string;
  consumed_at: number | string | null;
}

/**
 * oidc-provider's storage over Knex: one table for every model, keyed by (model, id), with the
 * fields the library looks up by (grant id, session uid, device user code) indexed.
 * The same code serves SQLite and PostgreSQL.
 */
export class KnexAdapter implements Adapter {
  readonly #knex: Knex;
  readonly #model: string;

  constructor(knex: Knex, model: string) {
    this.#knex = knex;
    this.#model = model;
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    const row = {
      model: this.#model,
      id,
      payload: JSON.stringify(payload),
      grant_id: payload.grantId ?? null,
      user_code: payload.userCode ?? null,
      uid: payload.uid ?? null,
      expires_at: expiresIn ? nowSeconds() + expiresIn : null,
      consumed_at: null,
    };
    await this.#knex(TABLE).insert(row).onConflict(['model', 'id']).merge();
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    return this.#findBy({ id });
  }

  async findByUid(uid: string): Promise<AdapterPayload | undefined> {
    return this.#findBy({ uid });
  }

  async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    return this.#findBy({ user_code: userCode });
  }

  /**
   * One conditional UPDATE: of any number of concurrent redemptions of a code or refresh token,
   * exactly one changes the row. The losers learn it here and revoke the whole grant, which is
   * what RFC 6749 §4.1.2 and the refresh-token reuse rules ask for.
   */
  async consume(id: string): Promise<void> {
    const changed = await this.#knex(TABLE)
      .where({ model: this.#model, id })
      .whereNull('consumed_at')
      .update({ consumed_at: nowSeconds() });
    if (changed === 0) {
      const row = await this.#knex(TABLE).first('grant_id').where({ model: this.#model, id });
      if (row?.grant_id) await this.revokeByGrantId(row.grant_id);
      throw new errors.InvalidGrant(`${this.#label} already consumed`);
    }
  }

  async destroy(id: string): Promise<void> {
    await this.#knex(TABLE).where({ model: this.#model, id }).delete();
  }

  /** Removes every token, code and session entry of the grant, and the grant itself. */
  async revokeByGrantId(grantId: string): Promise<void> {
    await this.#knex(TABLE)
      .where({ grant_id: grantId })
      .orWhere({ model: 'Grant', id: grantId })
      .delete();
  }

  get #label(): string {
    return this.#model === 'AuthorizationCode' ? 'authorization code'
      : this.#model === 'RefreshToken' ? 'refresh token'
        : this.#model;
  }

  async #findBy(where: Record<string, string>): Promise<AdapterPayload | undefined> {
    const row: Row | undefined = await this.#knex(TABLE)
      .first('payload', 'consumed_at')
      .where({ model: this.#model, ...where });
    if (!row) return undefined;
    // Expired rows are still returned: the library checks expiry itself and then says "expired"
    // instead of "not found"; the cleanup job removes them later.
    const payload = JSON.parse(row.payload) as AdapterPayload;
    if (row.consumed_at !== null) payload.consumed = Number(row.consumed_at);
    return payload;
  }
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
  return knex(TABLE).where('expires_at', '<', nowSeconds()).delete();
}
