import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKeyService } from '../src/api-keys/service.ts';
import { createApiKeyStore } from '../src/api-keys/store.ts';
import { projectRoot } from '../src/config.ts';
import { ensureApiClient } from '../src/resource-server/provision.ts';
import { tokenRequest } from './flows.ts';
import { freePort, startAuthServer, type TestAuthServer } from './harness.ts';

/** The first TypeScript block of the README: the requireAuth example. */
function readmeExample(): string {
  const doc = readFileSync(path.join(projectRoot, 'README.md'), 'utf8');
  const code = /```ts\n([\s\S]*?)```/.exec(doc)?.[1];
  if (!code) throw new Error('README.md has no ```ts block');
  return code;
}

// The documented middleware example, run unchanged as its own Koa app in its own process.
describe('the README\'s requireAuth example', () => {
  let as: TestAuthServer;
  let child: ChildProcess;
  let dir: string;
  let url: string;
  let machine: { client_id: string; client_secret?: string };
  const output: string[] = [];

  beforeAll(async () => {
    as = await startAuthServer();
    machine = await as.createClient({ grantTypes: ['client_credentials'], redirectUris: [], scope: 'read write' });
    const credentials = await ensureApiClient(as.server.provider, as.server.db.knex);
    // A user's project with latchkey, koa and @koa/router installed (as symlinks to ours).
    dir = mkdtempSync(path.join(os.tmpdir(), 'latchkey-readme-'));
    writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ type: 'module', private: true }));
    mkdirSync(path.join(dir, 'node_modules', '@koa'), { recursive: true });
    symlinkSync(projectRoot, path.join(dir, 'node_modules', 'latchkey'), 'dir');
    symlinkSync(path.join(projectRoot, 'node_modules', 'koa'), path.join(dir, 'node_modules', 'koa'), 'dir');
    symlinkSync(path.join(projectRoot, 'node_modules', '@koa', 'router'), path.join(dir, 'node_modules', '@koa', 'router'), 'dir');
    const file = path.join(dir, 'example.ts');
    writeFileSync(file, readmeExample());
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    child = spawn(process.execPath, ['--import', 'tsx', file], {
      cwd: projectRoot,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: 'warn', PORT: String(port), AUTH_SERVER_URL: as.url, API_CLIENT_ID: credentials.clientId, API_CLIENT_SECRET: credentials.clientSecret },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (d) => output.push(String(d)));
    child.stderr!.on('data', (d) => output.push(String(d)));
    // Wait until it answers (or dies).
    for (;;) {
      if (child.exitCode !== null) throw new Error(`the example exited: ${output.join('')}`);
      try {
        await fetch(`${url}/reports`);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });
  afterAll(async () => {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
    await as?.close({ removeDatabase: true });
  });

  const token = async (scope: string) => String((await tokenRequest(as.url, { grant_type: 'client_credentials', scope }, { basic: [machine.client_id, machine.client_secret!] })).body.access_token);
  const get = async (bearer?: string) => {
    const res = await fetch(`${url}/reports`, { headers: bearer ? { authorization: `Bearer ${bearer}` } : {} });
    return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, any> };
  };

  it('lets a token with the scope through, with ctx.state.auth set', async () => {
    const r = await get(await token('read'));
    expect(r.status, output.join('')).toBe(200);
    expect(r.body).toEqual({ user: null, scopes: ['read'] });
  });

  it('refuses a request without credentials in Latchkey\'s error format', async () => {
    const r = await get();
    expect(r.status).toBe(401);
    expect(r.body).toMatchObject({ error: 'missing_api_key', code: 401, request_id: r.headers.get('x-request-id') });
  });

  it('refuses a token without the scope with 403 and the scope in WWW-Authenticate', async () => {
    const r = await get(await token('write'));
    expect(r.status).toBe(403);
    expect(r.body.error).toBe('insufficient_scope');
    expect(r.headers.get('www-authenticate')).toContain('scope="read"');
  });

  it('accepts Latchkey API keys through introspection, refusing mistyped, scopeless and fenced-off ones', async () => {
    const keys = createApiKeyService(createApiKeyStore(as.server.db.knex));
    const owner = await as.createUser();
    const make = async (input: { scopes?: string[]; ipAllowlist?: string[] }) => (await keys.create({ userId: owner.id, name: 'k', environment: 'live', restricted: false, ...input })).secret;
    const reader = await make({ scopes: ['read'] });
    const ok = await get(reader);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body).toEqual({ user: owner.id, scopes: ['read'] });
    expect((await get(`${reader.slice(0, -1)}${reader.endsWith('a') ? 'b' : 'a'}`)).body.error).toBe('invalid_api_key');
    expect((await get(await make({ scopes: ['write'] }))).body.error).toBe('insufficient_scope');
    const fenced = await get(await make({ scopes: ['read'], ipAllowlist: ['203.0.113.0/24'] }));
    expect(fenced.status).toBe(403);
    expect(fenced.body).toMatchObject({ error: 'forbidden', message: expect.stringContaining('allowlist') });
  });

  it('refuses an unknown token with invalid_token', async () => {
    const r = await get('a'.repeat(43));
    expect(r.status).toBe(401);
    expect(r.body.error).toBe('invalid_token');
  });
});
