import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { createAuthServer, type AuthServer } from '../src/app.ts';
import { createClientService, type NewClient } from '../src/clients/service.ts';
import { loadConfig, type Config } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { ensureApiClient } from '../src/resource-server/provision.ts';
import { createApiServer, type ApiServer, type ApiServerOptions } from '../src/resource-server/server.ts';

export const POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432/test';

/**
 * A port nobody listens on right now, for a server to bind next (the issuer must be known before
 * the server starts, and a child process binds its own). It is picked below the kernel's ephemeral
 * range, where servers listening on port 0 and outgoing connections get theirs: a port from that
 * range, free when probed, was taken by another test file's server before a child process bound it
 * (EADDRINUSE in CI, and the test then talked to that other server).
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = LOWEST_PORT + Math.floor(Math.random() * (ephemeralFrom - LOWEST_PORT));
    if (await canListen(port)) return port;
  }
}

const LOWEST_PORT = 10_000;
/** Where the ephemeral range begins (Linux; 32768 elsewhere, below every other system's range). */
const ephemeralFrom = (() => {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
})();

/** Whether `port` can be bound on every address, as `latchkey serve` binds it. */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.unref();
    probe.once('error', () => resolve(false));
    probe.listen(port, () => probe.close(() => resolve(true)));
  });
}

/** A fresh, empty SQLite file; removed by the returned cleanup. */
export function tempSqlite(): { url: string; dir: string; cleanup(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'latchkey-test-'));
  return { url: path.join(dir, 'latchkey.sqlite'), dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Whether the test PostgreSQL answers; CI requires it (LATCHKEY_REQUIRE_POSTGRES=1). */
export async function postgresAvailable(): Promise<boolean> {
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    return true;
  } catch {
    if (process.env.LATCHKEY_REQUIRE_POSTGRES === '1') {
      throw new Error(`PostgreSQL is required (LATCHKEY_REQUIRE_POSTGRES=1) but ${POSTGRES_URL} is unreachable`);
    }
    console.warn(`skipping PostgreSQL tests: ${POSTGRES_URL} is unreachable`);
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

/** A fresh PostgreSQL database for one test file; dropped by the returned cleanup. */
export async function tempPostgres(): Promise<{ url: string; cleanup(): Promise<void> }> {
  const name = `latchkey_${process.pid}_${Math.random().toString(36).slice(2, 10)}`;
  const admin = new pg.Client({ connectionString: POSTGRES_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  return {
    url: POSTGRES_URL.replace(/\/test$/, `/${name}`),
    async cleanup() {
      const c = new pg.Client({ connectionString: POSTGRES_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

export interface TestAuthServer {
  url: string;
  port: number;
  config: Config;
  server: AuthServer;
  databaseUrl: string;
  /** Every log line the server wrote, to search for leaked secrets. */
  logs: string[];
  createUser(input?: { email?: string; password?: string; name?: string }): Promise<{ id: string; email: string; password: string }>;
  createClient(input?: Partial<NewClient>): Promise<{ client_id: string; client_secret?: string; redirect_uris: string[] }>;
  /** Stops the server; the database stays unless `removeDatabase` is set. */
  close(options?: { removeDatabase?: boolean }): Promise<void>;
}

let userCounter = 0;

/**
 * Boots the authorization server over real HTTP on a free port, on a temporary SQLite file unless
 * a database URL is given (pass the same URL again to test a restart).
 */
export async function startAuthServer(options: { databaseUrl?: string; port?: number; env?: NodeJS.ProcessEnv; config?: Partial<Config> } = {}): Promise<TestAuthServer> {
  const sqlite = options.databaseUrl ? undefined : tempSqlite();
  const databaseUrl = options.databaseUrl ?? sqlite!.url;
  const port = options.port ?? (await freePort());
  const config = loadConfig({ PORT: String(port), ISSUER: `http://127.0.0.1:${port}`, DATABASE_URL: databaseUrl, LOG_LEVEL: 'debug', ...options.env }, options.config);
  const logs: string[] = [];
  const logger = createLogger(config.logLevel, {}, (line) => logs.push(line));
  const server = await createAuthServer(config, { logger });
  await server.listen(port, '127.0.0.1');
  const clients = createClientService(server.provider, server.db.knex);

  return {
    url: config.issuer,
    port,
    config,
    server,
    databaseUrl,
    logs,
    async createUser(input = {}) {
      userCounter += 1;
      const email = input.email ?? `user${userCounter}-${Date.now()}@example.com`;
      const password = input.password ?? 'correct horse battery staple';
      const user = await server.users.create({ email, password, name: input.name ?? `Test User ${userCounter}` });
      return { id: user.id, email: user.email, password };
    },
    async createClient(input = {}) {
      return clients.create({
        name: input.name ?? 'Test App',
        redirectUris: input.redirectUris ?? ['http://127.0.0.1:8787/callback'],
        scope: input.scope ?? 'openid profile email offline_access read write',
        public: input.public,
        grantTypes: input.grantTypes,
        resourceServer: input.resourceServer,
      });
    },
    async close({ removeDatabase = false } = {}) {
      await server.close();
      if (removeDatabase) sqlite?.cleanup();
    },
  };
}

/**
 * The server's provider (our layer included) on a port of its own, with `see` shown every
 * request's Koa context before the provider handles it: a look the main port does not give, its
 * middleware being composed when it started. Close it before the server.
 */
export async function watchContexts(as: TestAuthServer, see: (ctx: object) => void): Promise<{ url: string; close(): Promise<void> }> {
  as.server.provider.use(async (ctx, next) => {
    see(ctx);
    await next();
  });
  const watched = http.createServer(as.server.provider.callback());
  await new Promise<void>((resolve) => watched.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(watched.address() as net.AddressInfo).port}`,
    close: () => new Promise((resolve) => watched.close(() => resolve())),
  };
}

export interface TestApiServer {
  url: string;
  api: ApiServer;
  logs: string[];
  close(): Promise<void>;
}

/**
 * Boots the companion API over real HTTP on a free port, beside `as` and on its database, with
 * its introspection client provisioned as `npm start` does.
 */
export async function startApiServer(
  as: TestAuthServer,
  options: { config?: Partial<Config> } & Pick<ApiServerOptions, 'verifiers' | 'now'> = {},
): Promise<TestApiServer> {
  const config: Config = { ...as.config, authServerUrl: as.url, ...options.config };
  const logs: string[] = [];
  const logger = createLogger(config.logLevel, {}, (line) => logs.push(line));
  const introspection = await ensureApiClient(as.server.provider, as.server.db.knex);
  const api = createApiServer(config, { db: as.server.db, logger, introspection, verifiers: options.verifiers, now: options.now });
  const port = await api.listen(0, '127.0.0.1');
  return { url: `http://127.0.0.1:${port}`, api, logs, close: () => api.close() };
}
