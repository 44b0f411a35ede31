import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenRequest } from './flows.ts';
import { startAuthServer, type TestAuthServer } from './harness.ts';

// src/oidc/release-context.ts: once a response is sent, its Koa and OIDC contexts let go of the
// request, so that the accessor oidc-provider defines on every context cannot keep it alive
// through the young-generation collections.
describe('a finished request', () => {
  let as: TestAuthServer;
  let client: { client_id: string; client_secret?: string };
  const seen: KoaContextWithOIDC[] = [];
  const finishes: Promise<unknown>[] = [];
  // The same provider (our layer included), with a look at every context, on a port of its own.
  let watched: http.Server;
  let url: string;

  beforeAll(async () => {
    as = await startAuthServer();
    client = await as.createClient({ redirectUris: [], grantTypes: ['client_credentials'], resourceServer: true });
    as.server.provider.use(async (ctx, next) => {
      seen.push(ctx as KoaContextWithOIDC);
      // Registered after the release's own listener (our layer runs first): heard after it.
      finishes.push(new Promise((resolve) => ctx.res.once('finish', resolve)));
      await next();
    });
    watched = http.createServer(as.server.provider.callback());
    await new Promise<void>((resolve) => watched.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(watched.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => watched?.close(resolve));
    await as?.close({ removeDatabase: true });
  });

  const basic = (): [string, string] => [client.client_id, client.client_secret!];

  it('is answered in full, and its contexts no longer hold the request, its parameters or its entities', async () => {
    const issued = await tokenRequest(url, { grant_type: 'client_credentials', scope: 'read' }, { basic: basic() });
    expect(issued.status).toBe(200);
    const introspected = await fetch(`${url}/oauth/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(basic().join(':')).toString('base64')}` },
      body: new URLSearchParams({ token: String(issued.body.access_token) }),
    });
    expect(await introspected.json()).toMatchObject({ active: true, client_id: client.client_id, scope: 'read' });
    const refused = await tokenRequest(url, { grant_type: 'client_credentials', scope: 'read' }, { basic: [client.client_id, 'wrong'] });
    expect(refused.status).toBe(401);
    await Promise.all(finishes);

    expect(seen).toHaveLength(3);
    for (const ctx of seen) {
      const links = ctx as unknown as Record<string, unknown>;
      for (const key of ['request', 'response', 'req', 'res', 'state']) expect(links[key], key).toBeUndefined();
      const oidc = ctx.oidc as unknown as Record<string, unknown>;
      for (const key of ['ctx', 'params', 'entities', 'body']) expect(oidc[key], key).toBeUndefined();
    }
  });
});
