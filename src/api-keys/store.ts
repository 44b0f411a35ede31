import type { Knex } from 'knex';
import { isBetterSqlite, sqliteStatements } from '../db/sqlite-statements.ts';
import type { Environment } from './format.ts';

export interface ApiKey {
  id: string;
  userId: string;
  name: string;
  environment: Environment;
  restricted: boolean;
  /** null: the owner's full access (unrestricted sk_ keys only). */
  scopes: string[] | null;
  /** null: usable from any address. */
  ipAllowlist: string[] | null;
  expiresAt: number | null;
  createdAt: number;
  revokedAt: number | null;
  lastUsedAt: number | null;
  requestCount: number;
  prefix: string;
  lastFour: string;
}

export interface NewSecret {
  hash: string;
  prefix: string;
  lastFour: string;
}

export interface ApiKeyEvent {
  type: EventType;
  ip: string | null;
  detail: Record<string, unknown> | null;
  createdAt: number;
}

export type EventType =
  | 'created'
  | 'rolled'
  | 'revoked'
  | 'used_from_new_ip'
  | 'rejected_expired'
  | 'rejected_ip'
  | 'rejected_scope';

/** A secret as the verifier finds it: the key it belongs to, and when this secret stops working. */
export interface SecretMatch {
  key: ApiKey;
  /** Set for a secret that was rolled: the end of its grace period. */
  secretExpiresAt: number | null;
}

/** When the presented secret stops working: the key's expiry or the rolled secret's grace end, whichever is first. */
export function secretEndsAt({ key, secretExpiresAt }: SecretMatch): number | null {
  const ends = [key.expiresAt, secretExpiresAt].filter((t): t is number => t !== null);
  return ends.length ? Math.min(...ends) : null;
}

/** Usage gathered in memory since the last flush (see usage.ts). */
export interface UsageBatch {
  counts: ReadonlyMap<string, { requests: number; lastUsedAt: number }>;
  /** Addresses seen per key, with when each was first seen in this batch. */
  addresses: ReadonlyMap<string, ReadonlyMap<string, number>>;
  events: readonly ({ keyId: string } & ApiKeyEvent)[];
}

interface KeyRow {
  id: string;
  user_id: string;
  name: string;
  environment: Environment;
  restricted: number | boolean;
  scopes: string | null;
  ip_allowlist: string | null;
  expires_at: number | string | null;
  created_at: number | string;
  revoked_at: number | string | null;
  last_used_at: number | string | null;
  request_count: number | string;
  prefix: string;
  last_four: string;
}

const num = (v: number | string | null): number | null => (v === null ? null : Number(v));
const json = <T>(v: string | null): T | null => (v === null ? null : (JSON.parse(v) as T));

const toKey = (r: KeyRow): ApiKey => ({
  id: r.id,
  userId: r.user_id,
  name: r.name,
  environment: r.environment,
  restricted: Boolean(r.restricted),
  scopes: json<string[]>(r.scopes),
  ipAllowlist: json<string[]>(r.ip_allowlist),
  expiresAt: num(r.expires_at),
  createdAt: Number(r.created_at),
  revokedAt: num(r.revoked_at),
  lastUsedAt: num(r.last_used_at),
  requestCount: Number(r.request_count),
  prefix: r.prefix,
  lastFour: r.last_four,
});

// Stays well under SQLite's and PostgreSQL's limits on bound parameters per statement.
function* chunks<T>(rows: T[], size = 500): Generator<T[]> {
  for (let i = 0; i < rows.length; i += size) yield rows.slice(i, i + size);
}

const eventRow = (keyId: string, e: ApiKeyEvent) => ({
  key_id: keyId,
  type: e.type,
  ip: e.ip,
  detail: e.detail ? JSON.stringify(e.detail) : null,
  created_at: e.createdAt,
});

/** API keys in the database. Every read by id names the owner: another account's key is not found. */
export function createApiKeyStore(knex: Knex) {
  const owned = (userId: string, id: string) => knex('api_keys').where({ id, user_id: userId });
  // The one query on a verification's cache miss runs as a prepared statement on SQLite.
  const sqlite = isBetterSqlite(knex) ? sqliteStatements(knex) : undefined;
  const BY_SECRET = 'SELECT k.*, s.expires_at AS secret_expires_at FROM api_key_secrets s JOIN api_keys k ON k.id = s.key_id WHERE s.hash = ?';

  return {
    async create(key: Omit<ApiKey, 'revokedAt' | 'lastUsedAt' | 'requestCount' | 'prefix' | 'lastFour'>, secret: NewSecret, ip: string | null): Promise<ApiKey> {
      const row: KeyRow = {
        id: key.id,
        user_id: key.userId,
        name: key.name,
        environment: key.environment,
        restricted: key.restricted,
        scopes: key.scopes && JSON.stringify(key.scopes),
        ip_allowlist: key.ipAllowlist && JSON.stringify(key.ipAllowlist),
        expires_at: key.expiresAt,
        created_at: key.createdAt,
        revoked_at: null,
        last_used_at: null,
        request_count: 0,
        prefix: secret.prefix,
        last_four: secret.lastFour,
      };
      await knex.transaction(async (trx) => {
        await trx('api_keys').insert(row);
        await trx('api_key_secrets').insert({ hash: secret.hash, key_id: key.id, prefix: secret.prefix, last_four: secret.lastFour, created_at: key.createdAt, expires_at: null });
        await trx('api_key_events').insert(eventRow(key.id, { type: 'created', ip, detail: null, createdAt: key.createdAt }));
      });
      return toKey(row);
    },

    /** The one query behind a cache miss: the secret's key, by the secret's digest. */
    async findBySecretHash(hash: string): Promise<SecretMatch | undefined> {
      type Found = (KeyRow & { secret_expires_at: number | string | null }) | undefined;
      const row: Found = sqlite?.usable()
        ? (sqlite.prepare(BY_SECRET).get(hash) as Found)
        : await knex('api_key_secrets as s').join('api_keys as k', 'k.id', 's.key_id').first('k.*', 's.expires_at as secret_expires_at').where('s.hash', hash);
      return row && { key: toKey(row), secretExpiresAt: num(row.secret_expires_at) };
    },

    async list(userId: string, environment?: Environment): Promise<ApiKey[]> {
      const rows: KeyRow[] = await knex('api_keys')
        .where({ user_id: userId, ...(environment ? { environment } : {}) })
        .orderBy([{ column: 'created_at' }, { column: 'id' }]);
      return rows.map(toKey);
    },

    async find(userId: string, id: string): Promise<ApiKey | undefined> {
      const row: KeyRow | undefined = await owned(userId, id).first();
      return row && toKey(row);
    },

    /** Any account's key: for the operator's CLI only. */
    async findAnyOwner(id: string): Promise<ApiKey | undefined> {
      const row: KeyRow | undefined = await knex('api_keys').first().where({ id });
      return row && toKey(row);
    },

    /** Revokes the key and forgets its secrets; undefined when the owner has no such key. */
    async revoke(userId: string, id: string, at: number, ip: string | null): Promise<ApiKey | undefined> {
      return knex.transaction(async (trx) => {
        // Writing first takes SQLite's write lock at once (see oidc/keys.ts).
        const changed = await trx('api_keys').where({ id, user_id: userId }).whereNull('revoked_at').update({ revoked_at: at });
        if (changed > 0) {
          await trx('api_key_secrets').where({ key_id: id }).delete();
          await trx('api_key_events').insert(eventRow(id, { type: 'revoked', ip, detail: null, createdAt: at }));
        }
        const row: KeyRow | undefined = await trx('api_keys').first().where({ id, user_id: userId });
        return row && toKey(row);
      });
    },

    /**
     * Gives the key a new secret. Its current secrets keep working until `graceEndsAt` (null: they
     * stop now). Undefined when the owner has no such active key.
     */
    async roll(userId: string, id: string, secret: NewSecret, at: number, graceEndsAt: number | null, ip: string | null): Promise<ApiKey | undefined> {
      return knex.transaction(async (trx) => {
        const changed = await trx('api_keys').where({ id, user_id: userId }).whereNull('revoked_at').update({ prefix: secret.prefix, last_four: secret.lastFour });
        if (changed === 0) return undefined;
        if (graceEndsAt === null) {
          await trx('api_key_secrets').where({ key_id: id }).delete();
        } else {
          // A secret already in an earlier grace period keeps the shorter of the two.
          await trx('api_key_secrets')
            .where({ key_id: id })
            .andWhere((q) => q.whereNull('expires_at').orWhere('expires_at', '>', graceEndsAt))
            .update({ expires_at: graceEndsAt });
        }
        await trx('api_key_secrets').insert({ hash: secret.hash, key_id: id, prefix: secret.prefix, last_four: secret.lastFour, created_at: at, expires_at: null });
        const grace = graceEndsAt === null ? 0 : Math.round((graceEndsAt - at) / 1000);
        await trx('api_key_events').insert(eventRow(id, { type: 'rolled', ip, detail: { previous_secret_valid_seconds: grace }, createdAt: at }));
        const row: KeyRow = await trx('api_keys').first().where({ id });
        return toKey(row);
      });
    },

    async events(keyId: string, limit: number): Promise<ApiKeyEvent[]> {
      const rows: { type: EventType; ip: string | null; detail: string | null; created_at: number | string }[] = await knex('api_key_events')
        .select('type', 'ip', 'detail', 'created_at')
        .where({ key_id: keyId })
        .orderBy('id', 'desc')
        .limit(limit);
      return rows.map((r) => ({ type: r.type, ip: r.ip, detail: json(r.detail), createdAt: Number(r.created_at) }));
    },

    /** Writes a batch of usage in one transaction: counts, last use, new addresses and events. */
    async recordUsage(batch: UsageBatch): Promise<void> {
      await knex.transaction(async (trx) => {
        for (const [keyId, { requests, lastUsedAt }] of batch.counts) {
          await trx('api_keys')
            .where({ id: keyId })
            .update({
              request_count: trx.raw('request_count + ?', [requests]),
              last_used_at: trx.raw('CASE WHEN last_used_at IS NULL OR last_used_at < ? THEN ? ELSE last_used_at END', [lastUsedAt, lastUsedAt]),
            });
        }
        const events = batch.events.map((e) => eventRow(e.keyId, e));
        for (const [keyId, addresses] of batch.addresses) {
          for (const rows of chunks([...addresses].map(([ip, seenAt]) => ({ key_id: keyId, ip, first_seen_at: seenAt })))) {
            const inserted: { ip: string; first_seen_at: number | string }[] = await trx('api_key_ips')
              .insert(rows)
              .onConflict(['key_id', 'ip'])
              .ignore()
              .returning(['ip', 'first_seen_at']);
            for (const { ip, first_seen_at } of inserted) {
              events.push(eventRow(keyId, { type: 'used_from_new_ip', ip, detail: null, createdAt: Number(first_seen_at) }));
            }
          }
        }
        events.sort((a, b) => a.created_at - b.created_at);
        for (const rows of chunks(events)) await trx('api_key_events').insert(rows);
      });
    },
  };
}

export type ApiKeyStore = ReturnType<typeof createApiKeyStore>;
