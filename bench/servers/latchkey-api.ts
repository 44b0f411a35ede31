import { createApiKeyStore } from '../../src/api-keys/store.ts';
import { createUsageRecorder } from '../../src/api-keys/usage.ts';
import { createApiKeyVerifier, type VerifiedKey } from '../../src/api-keys/verifier.ts';
import { apiScopes, loadConfig } from '../../src/config.ts';
import { openDatabase } from '../../src/db/knex.ts';
import { tuneGarbageCollectorForServing } from '../../src/http/gc-tuning.ts';
import { createLogger } from '../../src/logger.ts';
import { createApiServer } from '../../src/resource-server/server.ts';
import { createCredentialCache, type CredentialCache } from '../../src/verification/cache.ts';
import { createTokenVerifiers } from '../../src/verification/token-verifiers.ts';
import { shared, type ServerFixtures, type ServerSpec } from '../protocol.ts';

/** Never remembers a credential: each request verifies signature and claims (or introspects) again. */
const noCache: CredentialCache = { ...createCredentialCache(), get: () => ({ state: 'miss' }), set() {} };
const noKeyCache: CredentialCache<VerifiedKey> = { ...createCredentialCache<VerifiedKey>(), get: () => ({ state: 'miss' }), set() {} };

/**
 * The companion API in a process of its own, as `latchkey api` runs it beside the authorization
 * server (the way resource servers using requireAuth run too), plus a second copy with its
 * credential cache off, for the "cold" and "miss" rows.
 */
export async function start(spec: ServerSpec): Promise<{ fixtures: ServerFixtures; close(): Promise<void> }> {
  // As `latchkey serve` and `latchkey api` run (src/cli.ts).
  tuneGarbageCollectorForServing();
  const { authServerUrl, databaseUrl, introspector } = spec.beside!;
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    AUTH_SERVER_URL: authServerUrl,
    API_AUDIENCE: shared.audience,
    API_CLIENT_ID: introspector.clientId,
    API_CLIENT_SECRET: introspector.clientSecret,
    LOG_LEVEL: 'warn',
  });
  const db = openDatabase(config.databaseUrl);
  const api = createApiServer(config, { db, introspection: introspector });
  const apiPort = await api.listen(0, '127.0.0.1');

  const keyStore = createApiKeyStore(db.knex);
  const noCacheUsage = createUsageRecorder(keyStore, createLogger('warn'));
  const apiNoCache = createApiServer(config, {
    db,
    verifiers: [createApiKeyVerifier({ store: keyStore, usage: noCacheUsage, fullAccessScopes: apiScopes, cacheSeconds: 30, cache: noKeyCache }), ...createTokenVerifiers({
      authServerUrl: config.authServerUrl,
      audience: config.apiAudience,
      introspection: introspector,
      cache: noCache,
    })],
  });
  const apiNoCachePort = await apiNoCache.listen(0, '127.0.0.1');

  return {
    fixtures: { url: authServerUrl, apiUrl: `http://127.0.0.1:${apiPort}`, apiNoCacheUrl: `http://127.0.0.1:${apiNoCachePort}` },
    async close() {
      await apiNoCache.close();
      await noCacheUsage.close();
      await api.close();
      await db.close();
    },
  };
}
