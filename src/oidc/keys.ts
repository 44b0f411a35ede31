import { randomBytes, randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import type { Knex } from 'knex';

export type SigningAlg = 'ES256' | 'RS256';

interface KeyRow {
  kid: string;
  alg: SigningAlg;
  private_jwk: string;
  created_at: number | string;
  retired_at: number | string | null;
}

export interface SigningKeySummary {
  kid: string;
  alg: SigningAlg;
  createdAt: string;
  retiredAt: string | null;
}

async function newKeyRow(alg: SigningAlg): Promise<KeyRow> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'RS256' ? { modulusLength: 2048 } : {}) });
  const kid = randomUUID();
  const jwk: JWK = { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
  return { kid, alg, private_jwk: JSON.stringify(jwk), created_at: Date.now(), retired_at: null };
}

/**
 * Signing keys live in the database, so tokens survive restarts and every instance signs with the
 * same keys. ES256 signs by default (ten times cheaper than RSA); an RS256 key is published too
 * for clients that ask for it. Within an algorithm the newest key signs. `rotate` only adds a key:
 * a running server keeps signing with the key it started with, so the older key is retired (and
 * its retention clock starts) when a server starts and takes up the newer one. Retired keys stay
 * published until every token they signed has expired.
 */
export function createKeyStore(knex: Knex) {
  const rows = async (): Promise<KeyRow[]> => knex('signing_keys').select().orderBy('created_at', 'desc');

  return {
    /** Private JWKs for oidc-provider, creating the first keys on first start. */
    async loadJwks(retentionSeconds: number): Promise<{ keys: JWK[] }> {
      const now = Date.now();
      for (const alg of ['ES256', 'RS256'] as const) {
        const active = (await rows()).filter((r) => r.alg === alg && r.retired_at === null);
        if (active.length === 0) {
          await knex('signing_keys').insert(await newKeyRow(alg)).onConflict('kid').ignore();
        } else if (active.length > 1) {
          // A rotation since the last start: from now on the newest signs and the others retire.
          await knex('signing_keys').whereIn('kid', active.slice(1).map((r) => r.kid)).whereNull('retired_at').update({ retired_at: now });
        }
      }
      await knex('signing_keys').whereNotNull('retired_at').where('retired_at', '<', now - retentionSeconds * 1000).delete();
      const all = await rows();
      // Active keys first (oidc-provider signs with the first key of an algorithm), then retired ones.
      const ordered = [...all.filter((r) => r.retired_at === null), ...all.filter((r) => r.retired_at !== null)];
      return { keys: ordered.map((r) => JSON.parse(r.private_jwk) as JWK) };
    },

    /** Adds a new signing key, which servers sign with from their next start; returns the keys it replaces. */
    async rotate(alg: SigningAlg = 'ES256'): Promise<{ kid: string; replaces: string[] }> {
      const row = await newKeyRow(alg);
      const replaced: KeyRow[] = await knex('signing_keys').select('kid').where({ alg }).whereNull('retired_at');
      await knex('signing_keys').insert(row);
      return { kid: row.kid, replaces: replaced.map((r) => r.kid) };
    },

    async list(): Promise<SigningKeySummary[]> {
      return (await rows()).map((r) => ({
        kid: r.kid,
        alg: r.alg,
        createdAt: new Date(Number(r.created_at)).toISOString(),
        retiredAt: r.retired_at === null ? null : new Date(Number(r.retired_at)).toISOString(),
      }));
    },

    /** A named random secret, created once and kept (cookie signing keys, API-key pepper). */
    async secret(name: string, bytes = 32): Promise<string> {
      await knex('server_secrets').insert({ name, value: randomBytes(bytes).toString('base64url') }).onConflict('name').ignore();
      const row: { value: string } = await knex('server_secrets').first('value').where({ name });
      return row.value;
    },
  };
}

export type KeyStore = ReturnType<typeof createKeyStore>;
