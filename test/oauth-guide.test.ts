import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorize, pkcePair, tokenRequest } from './flows.ts';
import { startAuthServer, type TestAuthServer } from './harness.ts';

// The guide's OAuth examples, run as written (with its host replaced by our server).
describe('the guide\'s OAuth 2.0 examples', () => {
  let as: TestAuthServer;
  let user: { email: string; password: string; id: string };
  let client: { client_id: string; client_secret?: string; redirect_uris: string[] };
  const redirectUri = 'https://yourapp.com/callback';

  beforeAll(async () => {
    as = await startAuthServer();
    user = await as.createUser();
    client = await as.createClient({ redirectUris: [redirectUri], scope: 'openid profile email offline_access read write' });
  });
  afterAll(() => as.close({ removeDatabase: true }));

  const codeFor = async (scope = 'read write', extra: Partial<Parameters<typeof authorize>[0]> = {}) => {
    const { redirect } = await authorize({
      issuer: as.url, clientId: client.client_id, redirectUri, scope, email: user.email, password: user.password, state: 'xyz123', ...extra,
    });
    expect(redirect.origin + redirect.pathname).toBe(redirectUri);
    return redirect;
  };

  it('redirects back with a code and the same state, then exchanges it with a JSON body for access and refresh tokens', async () => {
    const redirect = await codeFor();
    expect(redirect.searchParams.get('state')).toBe('xyz123');
    expect(redirect.searchParams.get('iss')).toBe(as.url);
    const code = redirect.searchParams.get('code')!;
    const { status, body } = await tokenRequest(as.url, {
      grant_type: 'authorization_code', code, client_id: client.client_id, client_secret: client.client_secret!, redirect_uri: redirectUri,
    }, { json: true });
    expect(status).toBe(200);
    expect(body).toMatchObject({ token_type: 'Bearer', expires_in: 3600, scope: 'read write' });
    expect(typeof body.access_token).toBe('string');
    expect(typeof body.refresh_token).toBe('string');
    expect(body.id_token).toBeUndefined();
  });

  it('refreshes with the guide\'s JSON body, rotating the refresh token', async () => {
    const code = (await codeFor()).searchParams.get('code')!;
    const first = await tokenRequest(as.url, { grant_type: 'authorization_code', code, redirect_uri: redirectUri }, { basic: [client.client_id, client.client_secret!] });
    const refreshed = await tokenRequest(as.url, {
      grant_type: 'refresh_token', refresh_token: String(first.body.refresh_token), client_id: client.client_id, client_secret: client.client_secret!,
    }, { json: true });
    expect(refreshed.status).toBe(200);
    expect(refreshed.body.access_token).not.toBe(first.body.access_token);
    expect(refreshed.body.refresh_token).not.toBe(first.body.refresh_token);
    expect(refreshed.body.expires_in).toBe(3600);
  });

  it('issues a refresh token for offline_access without prompt=consent, and an ID token for openid', async () => {
    const code = (await codeFor('openid offline_access read')).searchParams.get('code')!;
    const { status, body } = await tokenRequest(as.url, { grant_type: 'authorization_code', code, redirect_uri: redirectUri }, { basic: [client.client_id, client.client_secret!] });
    expect(status, JSON.stringify(body)).toBe(200);
    expect(body.scope).toBe('read'); // the access token's scopes: it is for the API; openid went into the ID token
    expect(typeof body.refresh_token).toBe('string');
    expect(typeof body.id_token).toBe('string');
  });

  it('gives no refresh token to an OIDC request without offline_access', async () => {
    const code = (await codeFor('openid read')).searchParams.get('code')!;
    const { body } = await tokenRequest(as.url, { grant_type: 'authorization_code', code, redirect_uri: redirectUri }, { basic: [client.client_id, client.client_secret!] });
    expect(body.refresh_token).toBeUndefined();
    expect(typeof body.access_token).toBe('string');
  });

  it('accepts PKCE S256 from a confidential client and checks the verifier', async () => {
    const pkce = pkcePair();
    const code = (await codeFor('read', { pkce })).searchParams.get('code')!;
    const wrong = await tokenRequest(as.url, { grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: pkcePair().verifier }, { basic: [client.client_id, client.client_secret!] });
    expect(wrong.status).toBe(400);
    expect(wrong.body.error).toBe('invalid_grant');
    expect(String(wrong.body.error_description)).toMatch(/code_verifier does not match/);

    const code2 = (await codeFor('read', { pkce })).searchParams.get('code')!;
    const right = await tokenRequest(as.url, { grant_type: 'authorization_code', code: code2, redirect_uri: redirectUri, code_verifier: pkce.verifier }, { basic: [client.client_id, client.client_secret!] });
    expect(right.status).toBe(200);
  });

  it('publishes both discovery documents and an ES256 and an RS256 signing key', async () => {
    const oidc = await (await fetch(`${as.url}/.well-known/openid-configuration`)).json();
    const oauth = await (await fetch(`${as.url}/.well-known/oauth-authorization-server`)).json();
    for (const doc of [oidc, oauth]) {
      expect(doc).toMatchObject({
        issuer: as.url,
        authorization_endpoint: `${as.url}/oauth/authorize`,
        token_endpoint: `${as.url}/oauth/token`,
        introspection_endpoint: `${as.url}/oauth/introspect`,
        revocation_endpoint: `${as.url}/oauth/revoke`,
        jwks_uri: `${as.url}/oauth/jwks`,
        code_challenge_methods_supported: ['S256'],
      });
    }
    const jwks = await (await fetch(oidc.jwks_uri)).json();
    expect(jwks.keys.map((k: { alg: string }) => k.alg).sort()).toEqual(['ES256', 'RS256']);
    expect(JSON.stringify(jwks)).not.toMatch(/"d":/);
  });

  it('never writes a token, secret or password to its log', async () => {
    const code = (await codeFor('openid offline_access read')).searchParams.get('code')!;
    const { body } = await tokenRequest(as.url, { grant_type: 'authorization_code', code, redirect_uri: redirectUri }, { basic: [client.client_id, client.client_secret!] });
    const logs = as.logs.join('\n');
    expect(logs).toContain('login succeeded');
    for (const secret of [user.password, client.client_secret!, code, body.access_token, body.refresh_token, body.id_token]) {
      expect(logs).not.toContain(String(secret));
    }
  });

  it('sends access_denied back to the app when the person denies consent', async () => {
    const { redirect } = await authorize({
      issuer: as.url, clientId: client.client_id, redirectUri, scope: 'read write', email: user.email, password: user.password, state: 'st', decision: 'deny',
    });
    expect(redirect.searchParams.get('error')).toBe('access_denied');
    expect(redirect.searchParams.get('state')).toBe('st');
    expect(redirect.searchParams.get('code')).toBeNull();
  });
});
