import { get } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuthServer, type TestAuthServer } from './harness.ts';

// Discovery and the JWKS are serialised once (src/oidc/metadata-cache.ts): same answer, plus an ETag.
describe('discovery and JWKS served once-serialised', () => {
  let as: TestAuthServer;
  beforeAll(async () => {
    as = await startAuthServer();
  });
  afterAll(() => as?.close({ removeDatabase: true }));

  for (const path of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server', '/oauth/jwks']) {
    it(`answers ${path} identically every time, with an ETag, and 304 to a matching If-None-Match`, async () => {
      const first = await fetch(`${as.url}${path}`);
      const second = await fetch(`${as.url}${path}`, { headers: { origin: 'https://app.example' } });
      expect(first.status).toBe(200);
      expect(second.status).toBe(200);
      const etag = first.headers.get('etag');
      expect(etag).toMatch(/^"[A-Za-z0-9_-]{43}"$/);
      expect(second.headers.get('etag')).toBe(etag);
      expect(await second.text()).toBe(await first.text());
      expect(first.headers.get('content-type')).toMatch(/json/);
      expect(first.headers.get('access-control-allow-origin')).toBe('*');
      expect(second.headers.get('access-control-allow-origin')).toBe('https://app.example');

      // node:http, not fetch: fetch may add its own cache headers to a conditional request.
      const revalidated = await new Promise<number>((resolve, reject) => {
        get(`${as.url}${path}`, { headers: { 'if-none-match': etag! } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).on('error', reject);
      });
      expect(revalidated).toBe(304);
    });
  }

  it('keeps discovery URLs on the origin that was asked, and the JWKS free of private key parts', async () => {
    const discovery = (await (await fetch(`${as.url}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    expect(discovery.issuer).toBe(as.url);
    expect(discovery.token_endpoint).toBe(`${as.url}/oauth/token`);
    const { keys } = (await (await fetch(`${as.url}/oauth/jwks`)).json()) as { keys: Record<string, unknown>[] };
    expect(keys.length).toBeGreaterThan(0);
    for (const key of keys) expect(key.d).toBeUndefined();
  });
});
