import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';
import { hashPassword } from '../../src/accounts/passwords.ts';
import { createAuthServer } from '../../src/app.ts';
import { generateApiKey } from '../../src/api-keys/format.ts';
import { createApiKeyService } from '../../src/api-keys/service.ts';
import { createApiKeyStore } from '../../src/api-keys/store.ts';
import { createClientService } from '../../src/clients/service.ts';
import { loadConfig } from '../../src/config.ts';
import { tuneGarbageCollectorForServing } from '../../src/http/gc-tuning.ts';
import { ensureApiClient } from '../../src/resource-server/provision.ts';
import { shared, type ServerFixtures, type ServerSpec } from '../protocol.ts';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** A database of its own for this run: a temporary SQLite file, or a fresh PostgreSQL database. */
async function temporaryDatabase(spec: ServerSpec): Promise<{ url: string; remove(): Promise<void> }> {
  if (spec.database === 'postgres') {
    const name = `latchkey_bench_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
    const admin = async (sql: string) => {
      const client = new pg.Client({ connectionString: spec.postgresUrl });
      await client.connect();
      try {
        await client.query(sql);
      } finally {
        await client.end();
      }
    };
    await admin(`CREATE DATABASE ${name}`);
    return { url: spec.postgresUrl!.replace(/\/[^/]*$/, `/${name}`), remove: () => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
  }
  const dir = mkdtempSync(path.join(spec.tmpDir, 'sqlite-'));
  return { url: path.join(dir, 'latchkey.sqlite'), remove: async () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Latchkey's authorization server on its own database. The companion API runs in a process of
 * its own (latchkey-api.ts), started by the benchmark once this one is ready.
 */
export async function start(spec: ServerSpec): Promise<{ fixtures: ServerFixtures; close(): Promise<void> }> {
  // As `latchkey serve` and `latchkey api` run (src/cli.ts).
  tuneGarbageCollectorForServing();
  const database = await temporaryDatabase(spec);
  const port = await freePort();
  const config = loadConfig({
    PORT: String(port),
    ISSUER: `http://127.0.0.1:${port}`,
    DATABASE_URL: database.url,
    API_AUDIENCE: shared.audience,
    JWT_ACCESS_TOKENS: spec.mode === 'jwt' ? 'true' : 'false',
    ACCESS_TOKEN_TTL: String(shared.accessTokenTtl),
    REFRESH_TOKEN_TTL: String(shared.refreshTokenTtl),
    // Request logs are off in every target; the peer writes none either.
    LOG_LEVEL: 'warn',
  });
  const server = await createAuthServer(config);
  await server.listen(port, '127.0.0.1');

  const user = await server.users.create(shared.user);
  const seeder = await server.users.create(shared.seedUser);
  await server.db.knex('users').where({ id: seeder.id }).update({ password_hash: await hashPassword(shared.seedUser.password, shared.seedUserHash) });
  const apiKey = await createApiKeyService(createApiKeyStore(server.db.knex)).create({ userId: user.id, name: 'Bench key', environment: 'live', restricted: false });
  const unknownKey = generateApiKey('sk', 'live').secret;
  // Same shape, last checksum character changed: refused before any lookup.
  const badChecksum = `${unknownKey.slice(0, -1)}${unknownKey.endsWith('A') ? 'B' : 'A'}`;
  const service = createClientService(server.provider, server.db.knex);
  const created = {
    service: await service.create({ name: 'Bench service', redirectUris: [], scope: 'read write', grantTypes: ['client_credentials'] }),
    web: await service.create({ name: 'Bench web app', redirectUris: [shared.redirectUri], scope: shared.webScope }),
    introspector: await ensureApiClient(server.provider, server.db.knex),
  };

  const fixtures: ServerFixtures = {
    url: config.issuer,
    databaseUrl: database.url,
    clients: {
      service: { clientId: created.service.client_id, clientSecret: created.service.client_secret! },
      web: { clientId: created.web.client_id, clientSecret: created.web.client_secret!, redirectUri: shared.redirectUri },
      introspector: created.introspector,
    },
    user: { email: shared.user.email, password: shared.user.password },
    seedUser: { email: shared.seedUser.email, password: shared.seedUser.password },
    apiKeys: { valid: apiKey.secret, unknown: unknownKey, badChecksum },
  };
  return {
    fixtures,
    async close() {
      await server.close();
      await database.remove();
    },
  };
}
