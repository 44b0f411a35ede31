import { randomUUID } from 'node:crypto';
import { generateApiKey, hashApiKey, type Environment } from './format.ts';
import type { ApiKey, ApiKeyEvent, ApiKeyStore } from './store.ts';

export interface NewApiKey {
  userId: string;
  name: string;
  environment: Environment;
  restricted: boolean;
  /** Already checked against the known scopes; undefined: full access (sk_ keys only). */
  scopes?: string[];
  /** Canonical CIDRs (http/client-ip.ts parseCidrs). */
  ipAllowlist?: string[];
  expiresAt?: number;
}

export class ApiKeyRuleError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
  }
}

/** Longest grace period for a rolled key's previous secret. */
export const MAX_ROLL_GRACE_SECONDS = 30 * 24 * 3600;

/**
 * The rules of API keys, shared by the HTTP API and the CLI: which keys may exist, and how
 * they are created, rolled and revoked. The secret exists only in the return value of
 * `create` and `roll`; the store keeps its digest.
 */
export function createApiKeyService(store: ApiKeyStore, options: { now?: () => number; onChange?: (keyId: string) => void } = {}) {
  const now = options.now ?? Date.now;
  const changed = options.onChange ?? (() => {});

  const newSecret = (key: { restricted: boolean; environment: Environment }) => {
    const { secret, prefix, lastFour } = generateApiKey(key.restricted ? 'rk' : 'sk', key.environment);
    return { secret, stored: { hash: hashApiKey(secret), prefix, lastFour } };
  };

  return {
    async create(input: NewApiKey, ip: string | null = null): Promise<{ key: ApiKey; secret: string }> {
      const at = now();
      if (input.restricted && !input.scopes?.length) {
        throw new ApiKeyRuleError('scopes', 'a restricted key must list the scopes it may use');
      }
      if (input.scopes && input.scopes.length === 0) {
        throw new ApiKeyRuleError('scopes', 'list at least one scope, or leave scopes out for the owner\'s full access');
      }
      if (input.expiresAt !== undefined && input.expiresAt <= at) {
        throw new ApiKeyRuleError('expires_at', 'must be in the future');
      }
      const { secret, stored } = newSecret(input);
      const key = await store.create({
        id: `key_${randomUUID().replaceAll('-', '')}`,
        userId: input.userId,
        name: input.name,
        environment: input.environment,
        restricted: input.restricted,
        scopes: input.scopes ? [...new Set(input.scopes)] : null,
        ipAllowlist: input.ipAllowlist?.length ? [...new Set(input.ipAllowlist)] : null,
        expiresAt: input.expiresAt ?? null,
        createdAt: at,
      }, stored, ip);
      return { key, secret };
    },

    /** A new secret for the key; the previous one keeps working for `graceSeconds` (0: stops now). */
    async roll(userId: string, id: string, graceSeconds: number, ip: string | null = null): Promise<{ key: ApiKey; secret: string; previousExpiresAt: number | null } | undefined> {
      if (!Number.isInteger(graceSeconds) || graceSeconds < 0 || graceSeconds > MAX_ROLL_GRACE_SECONDS) {
        throw new ApiKeyRuleError('expires_in', `must be a whole number of seconds from 0 to ${MAX_ROLL_GRACE_SECONDS}`);
      }
      const current = await store.find(userId, id);
      if (!current || current.revokedAt !== null) return undefined;
      const at = now();
      const { secret, stored } = newSecret(current);
      const graceEndsAt = graceSeconds > 0 ? at + graceSeconds * 1000 : null;
      const key = await store.roll(userId, id, stored, at, graceEndsAt, ip);
      if (!key) return undefined;
      changed(id);
      return { key, secret, previousExpiresAt: graceEndsAt };
    },

    async revoke(userId: string, id: string, ip: string | null = null): Promise<ApiKey | undefined> {
      const key = await store.revoke(userId, id, now(), ip);
      if (key) changed(id);
      return key;
    },

    list: (userId: string, environment?: Environment) => store.list(userId, environment),
    find: (userId: string, id: string) => store.find(userId, id),
    findAnyOwner: (id: string) => store.findAnyOwner(id),
    events: (keyId: string, limit = 100): Promise<ApiKeyEvent[]> => store.events(keyId, limit),
  };
}

export type ApiKeyService = ReturnType<typeof createApiKeyService>;

export type KeyStatus = 'active' | 'expired' | 'revoked';
export const statusOf = (key: ApiKey, at: number): KeyStatus =>
  key.revokedAt !== null ? 'revoked' : key.expiresAt !== null && key.expiresAt <= at ? 'expired' : 'active';
