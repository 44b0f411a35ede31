import { execFile, spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../src/config.ts';
import { freePort, tempSqlite } from './harness.ts';

const run = promisify(execFile);
const bin = path.join(projectRoot, 'bin', 'latchkey.mjs');

describe('the latchkey CLI', () => {
  const db = tempSqlite();
  const env = { ...process.env, DATABASE_URL: `sqlite:${db.url}`, LOG_LEVEL: 'warn' };
  // From another working directory: the CLI must not depend on where it is started.
  const latchkey = (...args: string[]) => run(process.execPath, [bin, ...args], { env, cwd: os.tmpdir() });
  const json = async (...args: string[]) => JSON.parse((await latchkey(...args, '--json')).stdout);
  afterAll(() => db.cleanup());

  it('migrates, creates a user and clients, lists and deletes them, printing JSON', async () => {
    expect(await json('migrate')).toHaveProperty('applied');
    const user = await json('users', 'create', '--email', 'Ops@Example.com', '--password', 'a long password', '--name', 'Ops');
    expect(user).toMatchObject({ email: 'ops@example.com', name: 'Ops' });

    const web = await json('clients', 'create', '--name', 'Web', '--redirect-uri', 'https://app.example/cb', '--redirect-uri', 'https://app.example/cb2', '--scope', 'openid offline_access read write');
    expect(web.client_id).toMatch(/^lk_/);
    expect(web.client_secret).toEqual(expect.any(String));
    expect(web.redirect_uris).toEqual(['https://app.example/cb', 'https://app.example/cb2']);

    const spa = await json('clients', 'create', '--name', 'SPA', '--redirect-uri', 'http://localhost:5173/cb', '--scope', 'openid read', '--public');
    expect(spa.client_secret).toBeUndefined();
    expect(spa.token_endpoint_auth_method).toBe('none');

    const listed = await json('clients', 'list');
    expect(listed.map((c: { client_id: string }) => c.client_id)).toEqual(expect.arrayContaining([web.client_id, spa.client_id]));
    expect(JSON.stringify(listed)).not.toContain(web.client_secret);

    expect(await json('clients', 'delete', spa.client_id)).toEqual({ deleted: spa.client_id });
    expect((await json('clients', 'list')).some((c: { client_id: string }) => c.client_id === spa.client_id)).toBe(false);
  });

  it('explains bad input and exits non-zero', async () => {
    const failures: Array<[string[], RegExp]> = [
      [['users', 'create', '--password', 'long enough pw'], /--email is required/],
      [['users', 'create', '--email', 'not-an-email', '--password', 'long enough pw'], /not an email address/],
      [['clients', 'create', '--name', 'X', '--scope', 'read'], /redirect-uri/],
      [['clients', 'create', '--name', 'X', '--redirect-uri', 'https://a.example/cb', '--scope', 'read nonsense'], /scope/],
      [['clients', 'create', '--name', 'X', '--redirect-uri', 'not a url', '--scope', 'read'], /redirect_uris/],
      [['clients', 'delete', 'lk_missing'], /no client with id/],
      [['frobnicate'], /unknown command/],
      [['keys', 'create', '--name', 'K'], /--user is required/],
      [['keys', 'create', '--user', 'nobody@example.com', '--name', 'K'], /no user with email/],
      [['keys', 'create', '--user', 'ops@example.com', '--name', 'K', '--scope', 'launch:rockets'], /--scope launch:rockets: unknown/],
      [['keys', 'create', '--user', 'ops@example.com', '--name', 'K', '--restricted'], /--scope: a restricted key must list/],
      [['keys', 'create', '--user', 'ops@example.com', '--name', 'K', '--allow-ip', '10.0.0.0/40'], /--allow-ip: "10.0.0.0\/40" is not/],
      [['keys', 'create', '--user', 'ops@example.com', '--name', 'K', '--expires-in', 'soon'], /--expires-in soon is not a duration/],
      [['keys', 'create', '--user', 'ops@example.com', '--name', 'K', '--env', 'staging'], /--env must be test or live/],
      [['keys', 'revoke', 'key_missing'], /no API key with id key_missing/],
    ];
    for (const [args, message] of failures) {
      const error = await latchkey(...args).then(() => undefined, (e: { code: number; stderr: string }) => e);
      expect(error, args.join(' ')).toBeDefined();
      expect(error!.code).toBe(2);
      expect(error!.stderr).toMatch(message);
      expect(error!.stderr).not.toMatch(/\n\s+at /);
    }
  });

  it('creates, lists, rolls and revokes API keys; the key works at the companion API', async () => {
    const created = await json('keys', 'create', '--user', 'ops@example.com', '--name', 'Deploy bot', '--env', 'live', '--scope', 'read:users', '--scope', 'write:projects', '--expires-in', '90d', '--allow-ip', '127.0.0.1');
    expect(created.key).toMatch(/^sk_live_/);
    expect(created).toMatchObject({ name: 'Deploy bot', environment: 'live', scopes: ['read:users', 'write:projects'], ip_allowlist: ['127.0.0.1/32'], status: 'active' });
    expect(Date.parse(created.expires_at) - Date.now()).toBeGreaterThan(89 * 86400_000);
    const restricted = await json('keys', 'create', '--user', 'ops@example.com', '--name', 'Reports', '--restricted', '--scope', 'read:users');
    expect(restricted.key).toMatch(/^rk_test_/);

    const listed = await json('keys', 'list', '--user', 'ops@example.com');
    expect(listed.map((k: { id: string }) => k.id)).toEqual([created.id, restricted.id]);
    expect(JSON.stringify(listed)).not.toContain(created.key);

    const port = await freePort();
    const apiPort = await freePort();
    const server = spawn(process.execPath, [bin, 'serve'], { env: { ...env, PORT: String(port), API_PORT: String(apiPort), ISSUER: `http://127.0.0.1:${port}` }, cwd: os.tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      await waitForJson(`http://127.0.0.1:${port}/.well-known/openid-configuration`);
      const verify = async (key: string) => fetch(`http://127.0.0.1:${apiPort}/v1/auth/verify`, { headers: { authorization: `Bearer ${key}` } });
      // `serve` starts the companion API once the authorization server listens: wait for it too.
      const first = await waitForJson(`http://127.0.0.1:${apiPort}/v1/auth/verify`, { headers: { authorization: `Bearer ${created.key}` } });
      expect(first).toMatchObject({ authenticated: true, auth_method: 'api_key', environment: 'live', key_id: created.id });

      const rolled = await json('keys', 'roll', created.id, '--grace', '1h');
      expect(rolled.key).toMatch(/^sk_live_/);
      expect(Date.parse(rolled.previous_key_expires_at) - Date.now()).toBeGreaterThan(3500_000);
      expect((await verify(rolled.key)).status).toBe(200);
      expect((await verify(created.key)).status).toBe(200); // its grace period

      // The guide's one-host form: the authorization server's port answers the API too.
      expect((await fetch(`http://127.0.0.1:${port}/v1/auth/verify`, { headers: { authorization: `Bearer ${rolled.key}` } })).status).toBe(200);

      const revoked = await json('keys', 'revoke', created.id);
      expect(revoked.status).toBe('revoked');
      const events = (await json('keys', 'events', created.id)).map((e: { type: string }) => e.type);
      expect(events).toEqual(expect.arrayContaining(['created', 'rolled', 'revoked']));
    } finally {
      server.kill('SIGTERM');
      await new Promise((resolve) => server.once('exit', resolve));
    }
    // Usage still in memory at SIGTERM was written before the server exited: nothing is lost.
    const [after] = (await json('keys', 'list', '--user', 'ops@example.com')).filter((k: { id: string }) => k.id === created.id);
    expect(after.request_count).toBe(4);
    expect(after.last_used_at).toEqual(expect.any(String));
  });

  it('rotates signing keys: the new key is published beside the old one', async () => {
    const before = await json('signing-keys', 'list');
    const rotated = await json('signing-keys', 'rotate');
    expect(rotated.replaces).toHaveLength(1);
    const after = await json('signing-keys', 'list');
    expect(after).toHaveLength(before.length + 1);

    const port = await freePort();
    const apiPort = await freePort();
    const server = spawn(process.execPath, [bin, 'serve'], { env: { ...env, PORT: String(port), API_PORT: String(apiPort), ISSUER: `http://127.0.0.1:${port}` }, cwd: os.tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const jwks = await waitForJson(`http://127.0.0.1:${port}/oauth/jwks`);
      const kids = jwks.keys.map((k: { kid: string }) => k.kid);
      expect(kids).toContain(rotated.kid);
      expect(kids).toEqual(expect.arrayContaining(rotated.replaces));
      // The new key is the one that signs: it comes first among the ES256 keys.
      expect(jwks.keys.find((k: { alg: string }) => k.alg === 'ES256').kid).toBe(rotated.kid);
    } finally {
      server.kill('SIGTERM');
      await new Promise((resolve) => server.once('exit', resolve));
    }
    expect(server.exitCode ?? 0).toBe(0);
  });
});

async function waitForJson(url: string, init?: RequestInit) {
  for (let attempt = 0; attempt < 100; attempt += 1) {
    try {
      const res = await fetch(url, init);
      if (res.ok) return res.json();
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${url} never answered`);
}
