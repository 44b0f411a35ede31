import http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oidc from 'openid-client';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuthServer, type TestAuthServer } from './harness.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** The relying party's callback: records where the browser was sent back to. */
async function startCallbackServer() {
  const hits: URL[] = [];
  const server = http.createServer((req, res) => {
    hits.push(new URL(req.url!, `http://${req.headers.host}`));
    res.setHeader('content-type', 'text/html');
    res.end('<!doctype html><title>callback</title><p>back at the app</p>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/callback`, hits, close: () => new Promise<void>((r) => server.close(() => r())) };
}

describe('a person signs in and consents in a real browser; openid-client is the relying party', () => {
  let as: TestAuthServer;
  let browser: Browser;
  let callback: Awaited<ReturnType<typeof startCallbackServer>>;
  let user: { id: string; email: string; password: string };
  let config: oidc.Configuration;

  beforeAll(async () => {
    as = await startAuthServer();
    callback = await startCallbackServer();
    user = await as.createUser({ name: 'Ada Lovelace' });
    const client = await as.createClient({ name: 'Acme Dashboard', redirectUris: [callback.url], scope: 'openid profile email offline_access read write' });
    config = await oidc.discovery(new URL(as.url), client.client_id, client.client_secret, undefined, { execute: [oidc.allowInsecureRequests] });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await callback?.close();
    await as?.close({ removeDatabase: true });
  });

  /** Walks the login and consent pages like a person, with JavaScript off, and returns the callback URL. */
  async function signInAndConsent(authUrl: URL, decision: 'Allow' | 'Deny' = 'Allow') {
    const context = await browser.newContext({ javaScriptEnabled: false });
    const page = await context.newPage();
    const requested: string[] = [];
    page.on('request', (r) => requested.push(r.url()));

    const loginResponse = await page.goto(authUrl.href);
    expect(await page.locator('h1').textContent()).toBe('Sign in');
    const headers = loginResponse!.headers();
    expect(headers['x-frame-options']).toBe('DENY');
    expect(headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(headers['referrer-policy']).toBe('no-referrer');
    const html = await page.content();
    expect(html).toContain('Acme Dashboard');
    expect(html).not.toContain('[object');
    // The stylesheet applied (its nonce matched the Content-Security-Policy).
    expect(await page.locator('main').evaluate((el) => getComputedStyle(el).borderRadius)).toBe('12px');

    await page.fill('input[name=email]', user.email);
    await page.fill('input[name=password]', 'wrong password');
    await page.click('button[type=submit]:has-text("Sign in")');
    expect(await page.locator('[role=alert]').textContent()).toContain('incorrect');

    await page.fill('input[name=password]', user.password);
    await page.click('button[type=submit]:has-text("Sign in")');
    expect(await page.locator('h1').textContent()).toBe('Authorize Acme Dashboard');
    const consent = await page.locator('ul.scopes').textContent();
    expect(consent).toContain('See your email address');
    expect(consent).toContain('Stay connected when you are not using the app');

    await page.click(`button:has-text("${decision}")`);
    await page.waitForURL((url) => url.href.startsWith(callback.url));
    const landed = new URL(page.url());
    await context.close();
    // Nothing was loaded from anywhere but Latchkey and the app itself.
    for (const url of requested) expect(new URL(url).hostname).toBe('127.0.0.1');
    return landed;
  }

  it('completes code + PKCE + state, validates the ID token, reads userinfo, then refreshes with rotation and reuse detection', async () => {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const authUrl = oidc.buildAuthorizationUrl(config, {
      redirect_uri: callback.url,
      scope: 'openid profile email offline_access',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    const landed = await signInAndConsent(authUrl);

    const tokens = await oidc.authorizationCodeGrant(config, landed, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce });
    const claims = tokens.claims()!;
    expect(claims.sub).toBe(user.id);
    expect(claims.iss).toBe(as.url);
    expect(tokens.expires_in).toBe(3600);
    expect(tokens.refresh_token).toBeTruthy();

    const info = await oidc.fetchUserInfo(config, tokens.access_token, user.id);
    expect(info).toMatchObject({ sub: user.id, email: user.email, name: 'Ada Lovelace' });

    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token!);
    expect(refreshed.refresh_token).toBeTruthy();
    expect(refreshed.refresh_token).not.toBe(tokens.refresh_token);

    // Presenting the used refresh token again revokes the whole grant, the new token included.
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    await expect(oidc.refreshTokenGrant(config, refreshed.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    expect(await oidc.tokenIntrospection(config, refreshed.access_token)).toEqual({ active: false });
  });

  it('sends access_denied back to the app when the person clicks Deny', async () => {
    const state = oidc.randomState();
    const landed = await signInAndConsent(oidc.buildAuthorizationUrl(config, { redirect_uri: callback.url, scope: 'openid email offline_access', state }), 'Deny');
    expect(landed.searchParams.get('error')).toBe('access_denied');
    expect(landed.searchParams.get('state')).toBe(state);
  });

  it('issues, introspects and revokes client-credentials tokens', async () => {
    const m2m = await as.createClient({ grantTypes: ['client_credentials'], redirectUris: [], scope: 'read:users write:users' });
    const m2mConfig = await oidc.discovery(new URL(as.url), m2m.client_id, m2m.client_secret, undefined, { execute: [oidc.allowInsecureRequests] });
    const { access_token, expires_in, scope } = await oidc.clientCredentialsGrant(m2mConfig, { scope: 'read:users' });
    expect(expires_in).toBe(3600);
    expect(scope).toBe('read:users');
    expect(await oidc.tokenIntrospection(m2mConfig, access_token)).toMatchObject({ active: true, scope: 'read:users', client_id: m2m.client_id, token_type: 'Bearer' });
    await oidc.tokenRevocation(m2mConfig, access_token);
    expect(await oidc.tokenIntrospection(m2mConfig, access_token)).toEqual({ active: false });
  });
});
