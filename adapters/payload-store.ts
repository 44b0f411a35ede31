import type { Knex } from 'knex';
import Provider from 'oidc-provider';
import { createBatchMap, createInFlight } from '../src/db/batch-map.ts';
import { beginPgTransaction, pgStatements, type PgResult } from '../src/db/pg-statements.ts';
import { writeGateOf } from '../src/db/knex.ts';
import { GRANTS, readTogetherFor, USERS } from '../src/db/read-together.ts';
import { isBetterSqlite, sqliteStatements, type Statement } from '../src/db/sqlite-statements.ts';
import type { ChangeSignal } from './client-cache.ts';
import { createRowCache, type CachedRow } from './row-cache.ts';

const TABLE = 'oidc_payloads';

export interface PayloadRow {
  model: string;
  id: string;
  payload: string;
  grant_id: string | null;
  user_code: string | null;
  uid: string | null;
  /** Epoch seconds; null = does not expire. */
  expires_at: number | null;
}

export interface StoredPayload {
  payload: string;
  consumed_at: number | string | null;
}

export type LookupColumn = 'id' | 'uid' | 'user_code';

/**
 * The queries behind the adapter. A write's promise resolves once the write is committed (it may
 * share a statement or a commit with others of the same turn); inside `redeemingIn`, the writes
 * after a redemption are held until the request ends, and stored with it.
 */
export interface PayloadStore {
  /** Inserts or replaces the row (and clears its consumed mark). */
  upsert(row: PayloadRow): Promise<void>;
  /** On SQLite the row itself, read synchronously (a promise only while Knex holds the connection). */
  find(model: string, column: LookupColumn, value: string): StoredPayload | undefined | Promise<StoredPayload | undefined>;
  /** Marks the row consumed unless it already is; true when this call did it. */
  consume(model: string, id: string, at: number): Promise<boolean>;
  grantIdOf(model: string, id: string): Promise<string | null>;
  destroy(model: string, id: string): Promise<void>;
  revokeByGrantId(grantId: string): Promise<void>;
  /** Deletes the rows that expired before `now` (epoch seconds); returns how many. */
  removeExpired(now: number): Promise<number>;
  /** A signal that another process changed the database, where the database offers one. */
  changeSignal(): ChangeSignal | undefined;
  /** Whether `find` hands out the same row object for as long as the row is unchanged (a row cache). */
  readonly sharesRows: boolean;
  /**
   * Runs `respond`, one request: `request` is what `currentRequest` (see createPayloadStore) gives
   * while it runs. A code or refresh token it redeems (consume) and every write of the request
   * after that are stored together, after `respond` and before the response is sent, or not at
   * all: when the request does not succeed (`succeeded()` false after `respond`, or `respond`
   * threw), a refresh with a bad parameter found only after the rotation leaves the token usable,
   * and a crash in between loses nothing. A redemption that failed because the token was already
   * used is kept, with the grant it revoked. Rejects with WritesNotStored when the writes could not
   * be stored (what the response would have issued was not), and with AlreadyRedeemed when another
   * request redeemed the same code or token first (the grant is then revoked, as for any reuse).
   *
   * The consume and the writes after it wait in the request, and go to the database together at
   * its end: on PostgreSQL as one statement or one transaction (postgresStore), on SQLite in one
   * savepoint of a group commit (sqliteStore).
   */
  redeemingIn(request: object, respond: () => Promise<unknown>, succeeded: () => boolean): Promise<void>;
}

/** What `redeemingIn` rejects with when the request's writes could not be committed. */
export class WritesNotStored extends Error {
  constructor(cause: unknown) {
    super(`the request's writes were not stored: ${(cause as Error).message}`, { cause });
  }
}

/** What a redemption of a code or refresh token found already used says: "refresh token already consumed". */
export function alreadyConsumed(model: string): string {
  const label = model === 'AuthorizationCode' ? 'authorization code' : model === 'RefreshToken' ? 'refresh token' : model;
  return `${label} already consumed`;
}

/** What `redeemingIn` rejects with when another request redeemed the code or token first. */
export class AlreadyRedeemed extends Error {
  constructor(readonly model: string) {
    super(alreadyConsumed(model));
  }
}

/** Parameterised Knex queries: SQLite while its connection is not free for us, and the cleanup pass. */
function knexStore(knex: Knex): PayloadStore {
  return {
    async upsert(row) {
      await knex(TABLE).insert({ ...row, consumed_at: null }).onConflict(['model', 'id']).merge();
    },
    async find(model, column, value) {
      return knex(TABLE).first('payload', 'consumed_at').where({ model, [column]: value });
    },
    async consume(model, id, at) {
      const changed = await knex(TABLE).where({ model, id }).whereNull('consumed_at').update({ consumed_at: at });
      return changed > 0;
    },
    async grantIdOf(model, id) {
      const row: { grant_id: string | null } | undefined = await knex(TABLE).first('grant_id').where({ model, id });
      return row?.grant_id ?? null;
    },
    async destroy(model, id) {
      await knex(TABLE).where({ model, id }).delete();
    },
    async revokeByGrantId(grantId) {
      await knex(TABLE).where({ grant_id: grantId }).orWhere({ model: 'Grant', id: grantId }).delete();
    },
    removeExpired: (now) => knex(TABLE).where('expires_at', '<', now).delete(),
    changeSignal: () => undefined,
    sharesRows: false,
    // Never called: the stores built on this one (SQLite, PostgreSQL) run requests themselves.
    redeemingIn: async (_request, respond) => {
      await respond();
    },
  };
}

// The same queries in PostgreSQL's placeholders, as named statements: each connection parses and
// plans one once, then only binds and executes it.
const COLUMNS = 7;
/** ($first..$first+6), ... for `n` rows in a VALUES list (expires_at typed: the list is not the table). */
const pgRows = (n: number, first: number) => Array.from({ length: n }, (_, row) => `(${Array.from({ length: COLUMNS }, (_, c) => `$${first + row * COLUMNS + c}${c === COLUMNS - 1 ? '::bigint' : ''}`).join(', ')})`).join(', ');
/** A statement for `n` rows, named and written once per n: a request would otherwise write its text again. */
function builtOncePerRowCount(name: string, text: (n: number) => string): (n: number) => { name: string; text: string } {
  const built = new Map<number, { name: string; text: string }>();
  return (n) => {
    let statement = built.get(n);
    if (!statement) built.set(n, (statement = { name: `${name}_${n}`, text: text(n) }));
    return statement;
  };
}
const PG_ON_CONFLICT = `ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id,
      user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at, consumed_at = NULL`;
/**
 * A redemption whole, as one statement: the conditional consume ($1 consumed_at, $2 model, $3 id)
 * and, only when it changed the row, the upsert of `n` rows. Answers with `redeemed`: 1 or 0.
 * Another transaction redeeming the same row at the same time holds its row lock; this one waits
 * for it to end, then finds the row consumed and stores nothing.
 */
const PG_REDEEM = builtOncePerRowCount('latchkey_payload_redeem', (n) => `WITH redeemed AS (
      UPDATE ${TABLE} SET consumed_at = $1 WHERE model = $2 AND id = $3 AND consumed_at IS NULL RETURNING id
    ), issued AS (
      INSERT INTO ${TABLE} (model, id, payload, grant_id, user_code, uid, expires_at, consumed_at)
      SELECT *, NULL::bigint FROM (VALUES ${pgRows(n, 4)}) AS v WHERE EXISTS (SELECT FROM redeemed)
      ${PG_ON_CONFLICT}
    )
    SELECT count(*)::int AS redeemed FROM redeemed`);
/** An upsert of `n` rows in one statement. */
const PG_UPSERT = builtOncePerRowCount('latchkey_payload_upsert', (n) => `INSERT INTO ${TABLE} (model, id, payload, grant_id, user_code, uid, expires_at)
    VALUES ${pgRows(n, 1)} ${PG_ON_CONFLICT}`);
/** Sends the upsert of `rows` as one statement, on a connection of the pool or of a transaction. */
const upsertRows = (send: (name: string, text: string, values: unknown[]) => Promise<PgResult>, rows: PayloadRow[]) => {
  const { name, text } = PG_UPSERT(rows.length);
  return send(name, text, rows.flatMap(upsertValues));
};
/** The most rows one upsert statement of a batch carries. */
const MAX_BATCH = 32;
const rowKey = (row: PayloadRow) => `${row.model}\0${row.id}`;
/** The rows to upsert, the last upsert of a row winning, as it would one statement after another. */
const lastOfEach = (rows: PayloadRow[]): PayloadRow[] => {
  const last = new Map<string, PayloadRow>();
  for (const row of rows) {
    last.delete(rowKey(row));
    last.set(rowKey(row), row);
  }
  return [...last.values()];
};
const upsertValues = (row: PayloadRow) => [row.model, row.id, row.payload, row.grant_id, row.user_code, row.uid, row.expires_at];

/**
 * A token's row read by id comes with its grant's and the grant's account's (the users table's
 * columns but the password hash): grant_payload is null when the token has no grant or the grant
 * is gone, user_id null when the account is gone. A grant's payload is JSON, written by the adapter.
 */
const PG_FIND_WITH_GRANT = `SELECT t.model, t.payload, t.consumed_at, t.grant_id, g.payload AS grant_payload, g.consumed_at AS grant_consumed_at,
      a.account_id, u.id AS user_id, u.email AS user_email, u.name AS user_name, u.created_at AS user_created_at
    FROM ${TABLE} t
    LEFT JOIN ${TABLE} g ON g.model = 'Grant' AND g.id = t.grant_id
    LEFT JOIN LATERAL (SELECT g.payload::json ->> 'accountId' AS account_id) a ON true
    LEFT JOIN users u ON u.id = a.account_id`;
const PG_SQL = {
  findById: `${PG_FIND_WITH_GRANT} WHERE t.model = $1 AND t.id = $2`,
  findByIdAs: `${PG_FIND_WITH_GRANT} WHERE t.model = ANY($1) AND t.id = $2`,
  findByUid: `SELECT payload, consumed_at FROM ${TABLE} WHERE model = $1 AND uid = $2 LIMIT 1`,
  findByUserCode: `SELECT payload, consumed_at FROM ${TABLE} WHERE model = $1 AND user_code = $2 LIMIT 1`,
  consume: `UPDATE ${TABLE} SET consumed_at = $1 WHERE model = $2 AND id = $3 AND consumed_at IS NULL`,
  grantIdOf: `SELECT grant_id FROM ${TABLE} WHERE model = $1 AND id = $2`,
  destroy: `DELETE FROM ${TABLE} WHERE model = $1 AND id = $2`,
  revokeByGrantId: `DELETE FROM ${TABLE} WHERE grant_id = $1 OR (model = 'Grant' AND id = $1)`,
} as const;

const FIND_BY: Record<LookupColumn, keyof typeof PG_SQL> = { id: 'findById', uid: 'findByUid', user_code: 'findByUserCode' };

/**
 * PostgreSQL: named statements (pgStatements), each committed before the calls it serves resolve;
 * the upserts of one turn and the reads of one id as several models are each one statement, and a
 * token's read brings its grant and account (below).
 *
 * A request in `redeemingIn` that redeems a code or refresh token (consume) claims it, and what it
 * writes after that waits in the request (it reads its own writes back), as on SQLite. When the
 * request succeeded, the claim and those writes go to PostgreSQL together before the response is
 * sent: the usual case (a rotation's new refresh token and access token; a code's tokens) as one
 * statement (PG_REDEEM), anything else as one transaction; when it failed, none of it. The consume
 * there is conditional: when another request (of this process or another) redeemed the row
 * meanwhile, nothing is stored and this request lost the race (AlreadyRedeemed). The claim itself
 * reads nothing (SQLite's reads whether the row is still unused, which costs nothing there): a
 * redemption that lost such a race is found out at the request's end, if the request succeeds.
 *
 * Besides keeping a rotation whole, this saves round trips, each of which waits for PostgreSQL's
 * backend to be scheduled: a refresh used to open a transaction at the consume and hold it, with
 * its row lock, while the request went on (BEGIN, the consume, the upsert, COMMIT); it is now one
 * statement, and one commit.
 */
function postgresStore(knex: Knex, currentRequest: CurrentRequest): PayloadStore {
  const viaKnex = knexStore(knex);
  const statement = pgStatements(knex);
  const run = (name: keyof typeof PG_SQL, values: unknown[]) => statement(`latchkey_payload_${name}`, PG_SQL[name], values);
  const requests = requestScope<Redemption>(currentRequest);
  /** Holds a write of a request that redeemed something, for its end; false outside one. */
  const held = (w: Write): boolean => {
    const redemption = requests.current();
    if (!redemption?.claim) return false;
    redemption.after.push(w);
    return true;
  };
  const grantIdOf = async (model: string, id: string) =>
    ((await run('grantIdOf', [model, id])).rows[0] as { grant_id: string | null } | undefined)?.grant_id ?? null;

  // Upserts outside a redemption requested during one turn of the event loop go to PostgreSQL
  // together at the turn's end (setImmediate), like SQLite's group commit: client_credentials
  // grants under load share a round trip and a commit. Each caller resolves once its row is
  // committed. A batch that fails is sent again row by row, and each caller then gets what became
  // of its row. Removals (a destroy, a revocation, a consume) and upserts keep the order they were
  // asked in: a removal waits for the upserts asked for before it, and upserts asked for after it
  // wait for it. A batch goes in statements of at most MAX_BATCH rows, in (model, id) order, so
  // that each connection prepares a few statements only and two batches in flight at once lock
  // rows in the same order.
  interface Upsert { row: PayloadRow; resolve(): void; reject(err: unknown): void }
  let open: Upsert[] | undefined;
  const batches = createInFlight();
  const removals = createInFlight();
  const sendBatch = async (upserts: Upsert[]) => {
    const rows = lastOfEach(upserts.map((u) => u.row)).sort((a, b) => (rowKey(a) < rowKey(b) ? -1 : 1));
    try {
      for (let i = 0; i < rows.length; i += MAX_BATCH) {
        await upsertRows(statement, rows.slice(i, i + MAX_BATCH));
      }
      for (const u of upserts) u.resolve();
    } catch (err) {
      if (rows.length === 1) return upserts.forEach((u) => u.reject(err));
      const outcomes = new Map(await Promise.all(rows.map(async (row) => [rowKey(row), await upsertRows(statement, [row]).then(() => undefined, (e: unknown) => ({ e }))] as const)));
      for (const u of upserts) {
        const failed = outcomes.get(rowKey(u.row));
        if (failed) u.reject(failed.e);
        else u.resolve();
      }
    }
  };
  const upsertSoon = (row: PayloadRow) => new Promise<void>((resolve, reject) => {
    if (!open) {
      const batch: Upsert[] = (open = []);
      const after = removals.now();
      batches.add(new Promise((turnEnded) => setImmediate(turnEnded)).then(() => {
        if (open === batch) open = undefined;
        return Promise.all(after);
      }).then(() => sendBatch(batch)).catch((err: unknown) => batch.forEach((u) => u.reject(err))));
    }
    open.push({ row, resolve, reject });
  });
  /** Runs a removal after the upserts asked for before it; the upserts asked for after it wait for it. */
  const inOrder = <T>(write: () => Promise<T>): Promise<T> => {
    open = undefined;
    const before = batches.now();
    const done = before.length > 0 ? Promise.all(before).then(write) : write();
    removals.add(done);
    return done;
  };

  // A token read by id comes with its grant and the grant's account (PG_FIND_WITH_GRANT), which
  // oidc-provider reads next, in the same turn of the event loop: a refresh reads its refresh
  // token, its grant, then the account; introspection of a user's token, its grant. Those reads
  // find them in readTogether: one round trip instead of three.
  const readTogether = readTogetherFor(knex);
  const revoke = (grantId: string) => {
    readTogether.forget(GRANTS, grantId);
    return inOrder(() => run('revokeByGrantId', [grantId]));
  };
  /** A row of PG_FIND_WITH_GRANT. */
  interface FoundWithGrant extends StoredPayload {
    model: string;
    grant_id: string | null;
    grant_payload: string | null;
    grant_consumed_at: StoredPayload['consumed_at'];
    account_id: string | null;
    user_id: string | null;
    user_email: string;
    user_name: string | null;
    user_created_at: number | string;
  }
  // Reads of one id as several models, asked for together, are one query: introspection and
  // revocation look a token up as an access token, a client_credentials token and a refresh token
  // at once, which took three connections and three round trips, the request waiting for the
  // slowest. A read waits for the other reads of the same id asked for before process.nextTick
  // runs: called from a promise callback, as oidc-provider's code is, that is once the promise
  // callbacks queued meanwhile have run. The reads asked for before the same process.nextTick are
  // one batch, in a Map of their own (see batch-map.ts).
  const reading = createBatchMap<string, { models: string[]; rows: Promise<Map<string, StoredPayload>> }>(process.nextTick);
  const findById = async (model: string, id: string): Promise<StoredPayload | undefined> => {
    if (model === 'Grant') {
      const grant = readTogether.get<StoredPayload>(GRANTS, id);
      if (grant !== undefined) return grant ?? undefined;
    }
    let read = reading.get(id);
    if (!read) {
      const models: string[] = [];
      const rows = new Promise<void>((turnEnds) => process.nextTick(turnEnds)).then(async () => {
        const { rows: found } = models.length === 1 ? await run('findById', [models[0], id]) : await run('findByIdAs', [models, id]);
        const byModel = new Map<string, StoredPayload>();
        for (const row of found as FoundWithGrant[]) {
          byModel.set(row.model, { payload: row.payload, consumed_at: row.consumed_at });
          if (!row.grant_id) continue;
          readTogether.keep(GRANTS, row.grant_id, row.grant_payload === null ? null : { payload: row.grant_payload, consumed_at: row.grant_consumed_at });
          if (row.account_id) {
            readTogether.keep(USERS, row.account_id, row.user_id === null ? null : { id: row.user_id, email: row.user_email, name: row.user_name, created_at: row.user_created_at });
          }
        }
        return byModel;
      });
      read = { models, rows };
      reading.set(id, read);
    }
    if (!read.models.includes(model)) read.models.push(model);
    return (await read.rows).get(model);
  };

  /** Stores a redemption and the writes after it, or nothing when the row was redeemed already; whether it was stored. */
  const redeem = async ({ model, id, at }: Claim, after: Write[]): Promise<boolean> => {
    if (after.every((w) => w.kind === 'upsert' && !(w.row.model === model && w.row.id === id))) {
      const rows = lastOfEach((after as { row: PayloadRow }[]).map((w) => w.row));
      if (rows.length === 0) return ((await run('consume', [at, model, id])).rowCount ?? 0) > 0;
      const values = [at, model, id, ...rows.flatMap(upsertValues)];
      const { name, text } = PG_REDEEM(rows.length);
      const result = await statement(name, text, values);
      return (result.rows[0] as { redeemed: number }).redeemed > 0;
    }
    const transaction = await beginPgTransaction(knex);
    let commit = false;
    try {
      const sql = (name: keyof typeof PG_SQL, values: unknown[]) => transaction.run(`latchkey_payload_${name}`, PG_SQL[name], values);
      if (((await sql('consume', [at, model, id])).rowCount ?? 0) === 0) return false;
      for (const w of after) {
        if (w.kind === 'upsert') await upsertRows(transaction.run, [w.row]);
        else if (w.kind === 'consume') await sql('consume', [w.at, w.model, w.id]);
        else if (w.kind === 'destroy') await sql('destroy', [w.model, w.id]);
        else if (w.kind === 'revoke') await sql('revokeByGrantId', [w.grantId]);
      }
      commit = true;
    } finally {
      // A failed statement's error is the one to report, not a failed rollback's.
      await (commit ? transaction.end(true) : transaction.end(false).catch(() => {}));
    }
    return true;
  };

  return {
    async upsert(row) {
      if (row.model === 'Grant') readTogether.forget(GRANTS, row.id);
      if (!held({ kind: 'upsert', row })) await upsertSoon(row);
    },
    async find(model, column, value) {
      const redemption = column === 'id' ? requests.current() : undefined;
      const own = redemption?.claim && ownRow(redemption, model, value);
      if (own !== undefined) return own ?? undefined;
      if (column === 'id') return findById(model, value);
      return (await run(FIND_BY[column], [model, value])).rows[0] as StoredPayload | undefined;
    },
    async consume(model, id, at) {
      const redemption = requests.current();
      // Found unused by the request (oidc-provider reads a code or token, and refuses a used one,
      // before it consumes it): claimed; whether it is still unused is decided at the request's end.
      if (redemption && !redemption.claim) {
        redemption.claim = { model, id, at };
        return true;
      }
      // Outside a request, or a second redemption in one (none does both): at once.
      return inOrder(async () => ((await run('consume', [at, model, id])).rowCount ?? 0) > 0);
    },
    grantIdOf,
    async destroy(model, id) {
      if (model === 'Grant') readTogether.forget(GRANTS, id);
      if (!held({ kind: 'destroy', model, id })) await inOrder(() => run('destroy', [model, id]));
    },
    async revokeByGrantId(grantId) {
      if (!held({ kind: 'revoke', grantId })) await revoke(grantId);
    },
    removeExpired: (now) => viaKnex.removeExpired(now),
    changeSignal: () => undefined,
    sharesRows: false,
    redeemingIn(request, respond, succeeded) {
      const redemption: Redemption = { after: [] };
      return requests.serve(request, redemption, respond, async (responded) => {
        const { claim } = redemption;
        // A request that did not succeed stores nothing from its redemption on.
        if (!claim || !(responded && succeeded())) return;
        let stored: boolean;
        try {
          stored = await redeem(claim, redemption.after);
        } catch (err) {
          throw new WritesNotStored(err);
        }
        if (stored) return;
        // Another request redeemed it since this one read it: a reuse. Its grant goes.
        const grantId = await grantIdOf(claim.model, claim.id);
        if (grantId) await revoke(grantId);
        throw new AlreadyRedeemed(claim.model);
      });
    },
  };
}

const SQL = {
  upsert: `INSERT INTO ${TABLE} (model, id, payload, grant_id, user_code, uid, expires_at, consumed_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, NULL)
    ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id,
      user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at, consumed_at = NULL`,
  findById: `SELECT payload, consumed_at, grant_id FROM ${TABLE} WHERE model = ? AND id = ?`,
  findByUid: `SELECT payload, consumed_at FROM ${TABLE} WHERE model = ? AND uid = ? LIMIT 1`,
  findByUserCode: `SELECT payload, consumed_at FROM ${TABLE} WHERE model = ? AND user_code = ? LIMIT 1`,
  consume: `UPDATE ${TABLE} SET consumed_at = ? WHERE model = ? AND id = ? AND consumed_at IS NULL`,
  consumedAt: `SELECT consumed_at FROM ${TABLE} WHERE model = ? AND id = ?`,
  grantIdOf: `SELECT grant_id FROM ${TABLE} WHERE model = ? AND id = ?`,
  destroy: `DELETE FROM ${TABLE} WHERE model = ? AND id = ?`,
  revokeByGrantId: `DELETE FROM ${TABLE} WHERE grant_id = ? OR (model = 'Grant' AND id = ?)`,
  dataVersion: 'PRAGMA data_version',
  // IMMEDIATE takes the write lock at once, instead of upgrading a read lock later (which can
  // fail at once against another process writing at the same time).
  begin: 'BEGIN IMMEDIATE',
  commit: 'COMMIT',
  rollback: 'ROLLBACK',
  savepoint: 'SAVEPOINT redemption',
  rollbackTo: 'ROLLBACK TO redemption',
  release: 'RELEASE redemption',
} as const;

type Consume = { kind: 'consume'; model: string; id: string; at: number };
type Write =
  | { kind: 'upsert'; row: PayloadRow }
  | Consume
  | { kind: 'destroy'; model: string; id: string }
  | { kind: 'revoke'; grantId: string }
  // A redemption whole: its consume, then what the request wrote after it; all of it or nothing.
  | { kind: 'redemption'; consume: Consume; after: Write[] };

interface Pending {
  write: Write;
  resolve(changed: boolean): void;
  reject(err: unknown): void;
}

/**
 * SQLite through better-sqlite3 directly: statements are prepared once on the connection Knex
 * opened (same pragmas: WAL, synchronous=NORMAL) and run synchronously, which skips Knex's query
 * building and pool (~25-35 µs a query).
 *
 * Writes are group-committed: the writes requested during one turn of the event loop run, in the
 * order they were requested, in one transaction at the end of that turn, and each caller's promise
 * resolves only after COMMIT. A response that carries a new credential therefore still waits for
 * its row to be committed; the requests of one turn just share the commit (one WAL append instead
 * of one per row), which is what makes persistence nearly free under load.
 *
 * Reads by id come from an exact cache of the rows this store read (row-cache.ts), so reading a
 * token again (introspection, a grant at each refresh) costs no SQLite read transaction; this
 * store's own writes drop the rows they touch, and anything written by another path empties it
 * (see `changes` below).
 *
 * A request in `redeemingIn` that redeems a code or refresh token (consume) claims it when the row
 * is unconsumed in the database. What the request writes after that waits in the request (it
 * reads its own writes back), and when it succeeded it all goes, consume first, into one savepoint
 * of the next group commit before the response is sent; when it failed, none of it. The consume
 * there is still conditional: when another request (of this process or another) redeemed the row
 * meanwhile, the savepoint is rolled back and this request lost the race (AlreadyRedeemed).
 *
 * While a Knex transaction holds the connection (API-key usage, key rotation), a statement here
 * would join that transaction, so calls then go through Knex and wait for it like any query.
 */
function sqliteStore(knex: Knex, currentRequest: CurrentRequest): PayloadStore {
  const viaKnex = knexStore(knex);
  const sqlite = sqliteStatements(knex);
  const usable = () => sqlite.usable();
  const prepare = (name: keyof typeof SQL): Statement => sqlite.prepare(SQL[name]);
  let queue: Pending[] = [];
  /** A prepared statement when the connection is free for a statement of its own, else undefined. */
  const statement = (name: keyof typeof SQL): Statement | undefined => (usable() ? prepare(name) : undefined);

  /** Runs one write on the connection; true when a row changed. */
  const apply = (w: Write): boolean => {
    switch (w.kind) {
      case 'upsert':
        return prepare('upsert').run(w.row.model, w.row.id, w.row.payload, w.row.grant_id, w.row.user_code, w.row.uid, w.row.expires_at).changes > 0;
      case 'consume':
        return prepare('consume').run(w.at, w.model, w.id).changes > 0;
      case 'destroy':
        return prepare('destroy').run(w.model, w.id).changes > 0;
      case 'revoke':
        return prepare('revokeByGrantId').run(w.grantId, w.grantId).changes > 0;
      case 'redemption':
        // A savepoint: within the batch's transaction, or a transaction of its own.
        prepare('savepoint').run();
        try {
          const consumed = apply(w.consume);
          if (consumed) w.after.forEach(apply);
          else prepare('rollbackTo').run();
          prepare('release').run();
          return consumed;
        } catch (err) {
          prepare('rollbackTo').run();
          prepare('release').run();
          throw err;
        }
    }
  };

  const applyVia = async (store: PayloadStore, w: Write): Promise<boolean> => {
    switch (w.kind) {
      case 'upsert':
        await store.upsert(w.row);
        return true;
      case 'consume':
        return store.consume(w.model, w.id, w.at);
      case 'destroy':
        await store.destroy(w.model, w.id);
        return true;
      case 'revoke':
        await store.revokeByGrantId(w.grantId);
        return true;
      case 'redemption':
        return knex.transaction(async (trx) => {
          const inside = knexStore(trx);
          if (!(await applyVia(inside, w.consume))) return false;
          for (const later of w.after) await applyVia(inside, later);
          return true;
        });
    }
  };
  const applyViaKnex = (w: Write) => applyVia(viaKnex, w);

  const rows = createRowCache();
  /** Drops from the row cache what was just committed, so the next read finds the row as it now is. */
  const committed = (w: Write, changed: boolean): boolean => {
    switch (w.kind) {
      case 'upsert':
        rows.written(w.row.model, w.row.id);
        break;
      case 'consume':
      case 'destroy':
        rows.written(w.model, w.id);
        break;
      case 'revoke':
        rows.grantRevoked(w.grantId);
        break;
      case 'redemption':
        committed(w.consume, changed);
        for (const later of w.after) committed(later, changed);
        break;
    }
    return changed;
  };

  const applyEach = (batch: Pending[]) => {
    for (const p of batch) {
      try {
        p.resolve(committed(p.write, apply(p.write)));
      } catch (err) {
        p.reject(err);
      }
    }
  };

  // Writes waiting for the connection to come back from a Knex transaction, in request order.
  let draining: Promise<void> | undefined;
  const gate = writeGateOf(knex);
  const flush = (): void => {
    if (queue.length === 0) return;
    const direct = !draining && usable();
    // The checkpoint thread is finishing a checkpoint (src/db/knex.ts): the batch waits for it,
    // a few milliseconds, and so do the writes requested meanwhile; the event loop does not.
    if (direct && gate && !gate.enter()) return gate.whenOpen(flush);
    try {
      commitBatch(direct);
    } finally {
      if (direct) gate?.leave();
    }
  };
  const commitBatch = (direct: boolean) => {
    const batch = queue;
    queue = [];
    if (!direct) {
      const mine = (draining ?? Promise.resolve()).then(async () => {
        for (const p of batch) await applyViaKnex(p.write).then((changed) => p.resolve(committed(p.write, changed)), p.reject);
      });
      draining = mine;
      void mine.finally(() => {
        if (draining === mine) draining = undefined;
      });
      return;
    }
    if (batch.length === 1) return applyEach(batch);
    let results: boolean[];
    try {
      prepare('begin').run();
      results = batch.map((p) => apply(p.write));
      prepare('commit').run();
    } catch {
      if (sqlite.inTransaction()) prepare('rollback').run();
      // Something failed the batch: apply the writes one by one, so only that caller sees an error.
      return applyEach(batch);
    }
    batch.forEach((p, i) => p.resolve(committed(p.write, results[i]!)));
    return undefined;
  };

  // Whatever this store did not write itself bumps the epoch, which empties the row cache and
  // invalidates cached clients: a commit by another connection (another process) changes
  // PRAGMA data_version, read once per turn of the event loop; a write to the table through Knex
  // in this process (the cleanup job, a migration, a test) is seen in Knex's query events, at once.
  let epoch = 0;
  let lastDataVersion: number | undefined;
  let dataVersionRead = false;
  const changes = (): number | undefined => {
    if (!usable()) return undefined;
    if (!dataVersionRead) {
      const current = (prepare('dataVersion').get() as { data_version: number }).data_version;
      if (current !== lastDataVersion) {
        lastDataVersion = current;
        epoch += 1;
      }
      dataVersionRead = true;
      setImmediate(() => {
        dataVersionRead = false;
      });
    }
    return epoch;
  };
  const writesPayloads = (query: { sql?: unknown } | undefined) => {
    const sql = query?.sql;
    if (typeof sql === 'string' && sql.includes(TABLE) && !/^\s*select\b/i.test(sql)) epoch += 1;
  };
  knex.on('query', writesPayloads);
  knex.on('query-response', (_response: unknown, query: { sql?: unknown }) => writesPayloads(query));

  const write = (w: Write) => new Promise<boolean>((resolve, reject) => {
    queue.push({ write: w, resolve, reject });
    // setImmediate runs after this turn's I/O: every request parsed in this turn joins the batch.
    if (queue.length === 1) setImmediate(flush);
  });

  const grantIdOf = async (model: string, id: string): Promise<string | null> => {
    const s = statement('grantIdOf');
    if (!s) return viaKnex.grantIdOf(model, id);
    return (s.get(model, id) as { grant_id: string | null } | undefined)?.grant_id ?? null;
  };

  const requests = requestScope<Redemption>(currentRequest);
  /** How many requests hold a claim: while none does, no write is held and no read looks for one. */
  let claimed = 0;
  const redeeming = (): Redemption | undefined => (claimed > 0 ? requests.current() : undefined);
  /** Whether the row exists and is not consumed, as committed now. */
  const unconsumed = async (model: string, id: string): Promise<boolean> => {
    const s = statement('consumedAt');
    const row = (s ? s.get(model, id) : await viaKnex.find(model, 'id', id)) as { consumed_at: unknown } | undefined;
    return row !== undefined && row.consumed_at === null;
  };
  /** Holds a write of a request that redeemed something, for its end; false outside one. */
  const held = (w: Write): boolean => {
    const redemption = redeeming();
    if (!redemption?.claim) return false;
    redemption.after.push(w);
    return true;
  };

  return {
    async upsert(row) {
      if (!held({ kind: 'upsert', row })) await write({ kind: 'upsert', row });
    },
    find(model, column, value) {
      const redemption = column === 'id' ? redeeming() : undefined;
      const own = redemption?.claim && ownRow(redemption, model, value);
      if (own !== undefined) return own ?? undefined;
      if (column !== 'id') {
        const s = statement(column === 'uid' ? 'findByUid' : 'findByUserCode');
        return s ? (s.get(model, value) as StoredPayload | undefined) : viaKnex.find(model, column, value);
      }
      const current = changes();
      if (current === undefined) return viaKnex.find(model, column, value);
      const cached = rows.get(model, value, current);
      if (cached !== undefined) return cached ?? undefined;
      const row = prepare('findById').get(model, value) as CachedRow | undefined;
      // Introspection looks every token up as a refresh token too: that there is none is kept.
      if (row === undefined || !READ_ONCE.has(model)) rows.set(model, value, row ?? null, current);
      return row;
    },
    async consume(model, id, at) {
      const redemption = requests.current();
      // Outside a request, or a second redemption in one (none does both): at once, as any write.
      if (!redemption || redemption.claim) return write({ kind: 'consume', model, id, at });
      // Used already: the caller revokes the grant. Unused as committed now: the request goes on,
      // and its consume, conditional still, decides at its end (another request may have
      // redeemed the same row meanwhile, in this process or another: it then loses there).
      if (!(await unconsumed(model, id))) return false;
      redemption.claim = { model, id, at };
      claimed += 1;
      // The request goes on at the end of this turn, with the others that redeemed something in
      // it, as it did while each redemption waited for its own group commit: their signatures and
      // their commits then go together. Going on at once, one request after another, cost a
      // refresh_token run on SQLite a tenth of its throughput (0.79-0.83x the peer, against
      // 0.93x either way).
      await new Promise((resolve) => setImmediate(resolve));
      return true;
    },
    grantIdOf,
    async destroy(model, id) {
      if (!held({ kind: 'destroy', model, id })) await write({ kind: 'destroy', model, id });
    },
    async revokeByGrantId(grantId) {
      if (!held({ kind: 'revoke', grantId })) await write({ kind: 'revoke', grantId });
    },
    // Through Knex: its query events empty the row cache (expired rows may be cached).
    removeExpired: (now) => viaKnex.removeExpired(now),
    changeSignal: () => changes,
    sharesRows: true,
    redeemingIn(request, respond, succeeded) {
      const redemption: Redemption = { after: [] };
      return requests.serve(request, redemption, respond, async (responded) => {
        const { claim } = redemption;
        if (claim) claimed -= 1;
        // A request that did not succeed stores nothing from its redemption on: the code or token
        // stays as it was.
        if (!claim || !(responded && succeeded())) return;
        const { model, id, at } = claim;
        let stored: boolean;
        try {
          stored = await write({ kind: 'redemption', consume: { kind: 'consume', model, id, at }, after: redemption.after });
        } catch (err) {
          throw new WritesNotStored(err);
        }
        if (stored) return;
        // Another request redeemed it since this one found it unused: a reuse, as if this one had
        // come second. Its grant goes, and with it what the other redemption issued.
        const grantId = await grantIdOf(model, id);
        if (grantId) await write({ kind: 'revoke', grantId });
        throw new AlreadyRedeemed(model);
      });
    },
  };
}

interface Claim {
  model: string;
  id: string;
  at: number;
}

/**
 * A request in `redeemingIn`, once it redeemed a code or refresh token (`claim`): what it wrote
 * after that, in order, held until it ends.
 */
interface Redemption {
  claim?: Claim;
  after: Write[];
}

/**
 * What a request that redeemed something reads of its own held writes: the row it last upserted
 * (found), null for one it destroyed, undefined when it wrote nothing to that row.
 */
function ownRow(redemption: Redemption, model: string, id: string): StoredPayload | null | undefined {
  for (let i = redemption.after.length - 1; i >= 0; i -= 1) {
    const w = redemption.after[i]!;
    if (w.kind === 'upsert' && w.row.model === model && w.row.id === id) return { payload: w.row.payload, consumed_at: null };
    if (w.kind === 'destroy' && w.model === model && w.id === id) return null;
  }
  return undefined;
}

/**
 * Rows read once, at their one use, which consumes them (refresh tokens rotate: see tokenPolicy in
 * src/oidc/provider.ts): the row cache does not keep them, only that one does not exist. Cached
 * for the moment between that read and the consume, they only churned its Map, whose tables V8
 * moved to its old generation: 40% of what a refresh_token run promoted there, which its full
 * collections (9 ms) then cleared.
 */
const READ_ONCE = new Set(['AuthorizationCode', 'RefreshToken']);

/**
 * The request being served where the store is called, as `redeemingIn` was given it; undefined
 * outside any. The store's default is oidc-provider's own (`Provider.ctx`: the Koa context of the
 * request whose handler called the adapter), read from the AsyncLocalStorage the library keeps
 * anyway. On Node 20 every AsyncLocalStorage in use adds work to each promise the process makes
 * (~55 ns each, measured here); a store of our own made every request pay that twice.
 */
export type CurrentRequest = () => object | undefined;

/**
 * What a store keeps for each request inside `redeemingIn`: `current()` finds it where the store is
 * called; `serve` holds it for as long as `respond` runs, then calls `end(responded)`, `responded`
 * being false when `respond` threw (its error is thrown again after `end`). Work the request
 * started that writes after its response finds nothing, and writes on its own.
 */
function requestScope<R>(currentRequest: CurrentRequest) {
  const live = new WeakMap<object, R>();
  return {
    current(): R | undefined {
      const request = currentRequest();
      return request && live.get(request);
    },
    async serve(request: object, state: R, respond: () => Promise<unknown>, end: (responded: boolean) => Promise<void>): Promise<void> {
      live.set(request, state);
      let responded = false;
      try {
        await respond();
        responded = true;
      } finally {
        live.delete(request);
        await end(responded);
      }
    },
  };
}

const stores = new WeakMap<Knex, PayloadStore>();

/** The store for a database handle, made once per handle so statements are prepared once. */
export function payloadStoreFor(knex: Knex): PayloadStore {
  let store = stores.get(knex);
  if (!store) {
    store = createPayloadStore(knex, () => Provider.ctx);
    stores.set(knex, store);
  }
  return store;
}

/** A store of its own for `knex`, its requests told apart by `currentRequest`; payloadStoreFor shares one. */
export function createPayloadStore(knex: Knex, currentRequest: CurrentRequest): PayloadStore {
  return isBetterSqlite(knex) ? sqliteStore(knex, currentRequest) : postgresStore(knex, currentRequest);
}
