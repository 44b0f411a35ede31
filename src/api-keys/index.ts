import type { IncomingMessage } from 'node:http';
import type { Knex } from 'knex';
import type { Logger } from '../logger.ts';
import type { ApiKeyRouteDeps } from './routes.ts';
import { createApiKeyService, type ApiKeyService } from './service.ts';
import { createApiKeyStore } from './store.ts';
import { createUsageRecorder, type UsageRecorder } from './usage.ts';
import { createApiKeyVerifier, type ApiKeyVerifier } from './verifier.ts';

export interface ApiKeysOptions {
  knex: Knex;
  logger: Logger;
  /** The companion API's scopes: what a key may be given, and what a full-access key has. */
  scopes: readonly string[];
  cacheSeconds: number;
  usageFlushSeconds: number;
  clientIp: (req: IncomingMessage) => string;
  now?: () => number;
}

export interface ApiKeys {
  service: ApiKeyService;
  verifier: ApiKeyVerifier;
  usage: UsageRecorder;
  routes: ApiKeyRouteDeps;
  /** Writes pending usage. */
  close(): Promise<void>;
}

/** Wires API keys for a server: one store, one usage recorder, the verifier and the rules. */
export function createApiKeys(options: ApiKeysOptions): ApiKeys {
  const store = createApiKeyStore(options.knex);
  const usage = createUsageRecorder(store, options.logger, { flushSeconds: options.usageFlushSeconds });
  const verifier = createApiKeyVerifier({
    store,
    usage,
    fullAccessScopes: options.scopes,
    cacheSeconds: options.cacheSeconds,
    clientIp: options.clientIp,
    now: options.now,
  });
  const service = createApiKeyService(store, { now: options.now, onChange: (keyId) => verifier.forget(keyId) });
  return {
    service,
    verifier,
    usage,
    routes: { service, usage, knownScopes: options.scopes, clientIp: options.clientIp, now: options.now },
    close: () => usage.close(),
  };
}
