import type { AuthServer } from '../app.ts';
import type { Config } from '../config.ts';
import { migrate, openDatabase } from '../db/knex.ts';
import { createLogger } from '../logger.ts';
import type { ApiClientCredentials } from './provision.ts';
import { createApiServer, type ApiServer } from './server.ts';

// Registering the API's client needs oidc-provider: loaded only when one must be registered.
const ensureApiClient: typeof import('./provision.ts').ensureApiClient = async (...args) => (await import('./provision.ts')).ensureApiClient(...args);

/** `latchkey serve`: the companion API in the same process, on the authorization server's database. */
export async function startApiBeside(config: Config, auth: AuthServer): Promise<ApiServer> {
  const introspection = config.apiClient ?? (await ensureApiClient(auth.provider, auth.db.knex));
  const logger = auth.logger.child({ server: 'api' });
  const api = createApiServer(config, { db: auth.db, logger, introspection });
  const port = await api.listen(config.apiPort);
  // The guide calls /oauth/* and /v1/* on one host: the authorization server answers both.
  auth.mount(API_PATHS, api.handler);
  // Port 3000 serves the API too: its usage is written once both servers have stopped.
  auth.onClose(() => api.close());
  logger.info('companion API listening', { url: `http://localhost:${port}`, also_at: `${config.issuer}{${API_PATHS.join(',')}}`, auth_server: config.authServerUrl, audience: config.apiAudience });
  return api;
}

/** Where the companion API's routes live; `serve` also answers them on the authorization server's port. */
export const API_PATHS = ['/v1', '/v2', '/api-keys'] as const;

/** `latchkey api`: the companion API alone. */
export async function runApi(config: Config): Promise<void> {
  const db = openDatabase(config.databaseUrl);
  await migrate(db);
  const logger = createLogger(config.logLevel, { server: 'api' });
  const introspection = config.apiClient ?? (await provisionApiClient(config, db));
  const api = createApiServer(config, { db, logger, introspection });
  const port = await api.listen(config.apiPort);
  logger.info('companion API listening', { url: `http://localhost:${port}`, auth_server: config.authServerUrl, audience: config.apiAudience });
  const stop = async () => {
    await api.close();
    await db.close();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

/**
 * Registers the API's introspection client in the shared database, without starting the
 * authorization server (whose code is loaded for this only: with API_CLIENT_ID and
 * API_CLIENT_SECRET set, `latchkey api` never loads oidc-provider).
 */
async function provisionApiClient(config: Config, db: ReturnType<typeof openDatabase>): Promise<ApiClientCredentials> {
  const { createAuthServer } = await import('../app.ts');
  const auth = await createAuthServer({ ...config, logLevel: 'warn' }, { db });
  try {
    return await ensureApiClient(auth.provider, db.knex);
  } finally {
    await auth.close();
  }
}
