import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { projectRoot } from '../src/config.ts';
import { tokenRequest } from './flows.ts';
import { freePort, startAuthServer, tempSqlite } from './harness.ts';

const bin = path.join(projectRoot, 'bin', 'latchkey.mjs');
// Without the vitest worker's IPC variables, which would confuse the child.
const baseEnv = { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: 'warn' };

async function waitFor(url: string, child: ChildProcess, output: string[]): Promise<void> {
  for (;;) {
    if (child.exitCode !== null) throw new Error(`exited early: ${output.join('')}`);
    try {
      await fetch(url);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function start(args: string[], env: Record<string, string | undefined>) {
  const output: string[] = [];
  const child = spawn(process.execPath, [bin, ...args], { env: { ...baseEnv, ...env }, cwd: os.tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d) => output.push(String(d)));
  child.stderr!.on('data', (d) => output.push(String(d)));
  return { child, output };
}

describe('latchkey serve and latchkey api', () => {
  const children: ChildProcess[] = [];
  afterEach(async () => {
    for (const child of children.splice(0)) {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((resolve) => child.once('exit', resolve));
      }
    }
  });

  it('serve starts the companion API beside the authorization server, able to introspect with no setup', async () => {
    const db = tempSqlite();
    const [port, apiPort] = [await freePort(), await freePort()];
    const issuer = `http://127.0.0.1:${port}`;
    const { child, output } = start(['serve'], { DATABASE_URL: db.url, PORT: String(port), API_PORT: String(apiPort), ISSUER: issuer });
    children.push(child);
    await waitFor(`${issuer}/.well-known/openid-configuration`, child, output);
    await waitFor(`http://127.0.0.1:${apiPort}/v1/auth/verify`, child, output);
    // A client registered in the same database, as `latchkey clients create` does.
    const as = await startAuthServer({ databaseUrl: db.url, env: { API_PORT: String(apiPort) } });
    try {
      const client = await as.createClient({ grantTypes: ['client_credentials'], redirectUris: [], scope: 'read' });
      const { body } = await tokenRequest(issuer, { grant_type: 'client_credentials', scope: 'read' }, { basic: [client.client_id, client.client_secret!] });
      const res = await fetch(`http://127.0.0.1:${apiPort}/v1/auth/verify`, { headers: { authorization: `Bearer ${String(body.access_token)}` } });
      expect(res.status, output.join('')).toBe(200);
      expect(await res.json()).toMatchObject({ authenticated: true, client_id: client.client_id, auth_method: 'oauth' });
      // As the guide does, on one host: the authorization server hands /v1, /v2 and /api-keys to the API.
      for (const path of ['/v1/auth/verify', '/v2/auth/test']) {
        const same = await fetch(`${issuer}${path}`, { headers: { authorization: `Bearer ${String(body.access_token)}` } });
        expect(same.status, path).toBe(200);
        expect(await same.json()).toMatchObject({ authenticated: true, client_id: client.client_id });
      }
      const missing = await fetch(`${issuer}/api-keys`);
      expect(missing.status).toBe(401);
      expect(await missing.json()).toMatchObject({ error: 'missing_api_key' });
      // Only those prefixes: everything else is still the authorization server's.
      expect((await fetch(`${issuer}/v1x`)).headers.get('content-type') ?? '').not.toContain('application/json');
      expect((await fetch(`${issuer}/oauth/jwks`)).status).toBe(200);
    } finally {
      await as.close();
      db.cleanup();
    }
  });

  it('api starts the companion API alone, provisioning its introspection client in the shared database', async () => {
    const as = await startAuthServer();
    try {
      const apiPort = await freePort();
      const { child, output } = start(['api'], {
        DATABASE_URL: as.databaseUrl, API_PORT: String(apiPort), AUTH_SERVER_URL: as.url, API_AUDIENCE: as.config.apiAudience,
      });
      children.push(child);
      await waitFor(`http://127.0.0.1:${apiPort}/v2/auth/test`, child, output);
      const client = await as.createClient({ grantTypes: ['client_credentials'], redirectUris: [], scope: 'read' });
      const { body } = await tokenRequest(as.url, { grant_type: 'client_credentials', scope: 'read' }, { basic: [client.client_id, client.client_secret!] });
      const res = await fetch(`http://127.0.0.1:${apiPort}/v2/auth/test`, { headers: { authorization: `Bearer ${String(body.access_token)}` } });
      expect(res.status, output.join('')).toBe(200);
      expect(await res.json()).toMatchObject({ client_id: client.client_id, scopes: ['read'] });
    } finally {
      await as.close({ removeDatabase: true });
    }
  });
});
