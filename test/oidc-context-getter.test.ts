import type { KoaContextWithOIDC } from 'oidc-provider';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenRequest } from './flows.ts';
import { startAuthServer, watchContexts, type TestAuthServer } from './harness.ts';

// patches/oidc-provider+9.13.3.patch, applied by `npm install`: every request's `ctx.oidc` is
// read through one getter shared by all requests. The library as published defines a getter
// closed over each context, which gives each context a hidden class of its own in V8's old
// generation (a full collection every few seconds under load). Without the patch this fails.
describe("oidc-provider's per-request context", () => {
  let as: TestAuthServer;
  let client: { client_id: string; client_secret?: string };
  const seen: KoaContextWithOIDC[] = [];
  let watched: Awaited<ReturnType<typeof watchContexts>>;
  let url: string;

  beforeAll(async () => {
    as = await startAuthServer();
    client = await as.createClient({ redirectUris: [], grantTypes: ['client_credentials'], resourceServer: true });
    watched = await watchContexts(as, (ctx) => seen.push(ctx as KoaContextWithOIDC));
    url = watched.url;
  });
  afterAll(async () => {
    await watched?.close();
    await as?.close({ removeDatabase: true });
  });

  it('is read through one getter shared by every request, and is still each request\'s own', async () => {
    const basic: [string, string] = [client.client_id, client.client_secret!];
    const issued = await tokenRequest(url, { grant_type: 'client_credentials', scope: 'read' }, { basic });
    expect(issued.status).toBe(200);
    const introspected = await fetch(`${url}/oauth/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(basic.join(':')).toString('base64')}` },
      body: new URLSearchParams({ token: String(issued.body.access_token) }),
    });
    expect(await introspected.json()).toMatchObject({ active: true, client_id: client.client_id, scope: 'read' });

    expect(seen).toHaveLength(2);
    const [first, second] = seen.map((ctx) => Object.getOwnPropertyDescriptor(ctx, 'oidc'));
    expect(first?.get).toBeTypeOf('function');
    expect(second?.get).toBe(first?.get);
    // Shared getter, separate contexts: each request's OIDC context knows its own route and client.
    expect(seen[0]!.oidc).not.toBe(seen[1]!.oidc);
    expect(seen[0]!.oidc.route).toBe('token');
    expect(seen[1]!.oidc.route).toBe('introspection');
    expect((seen[0]!.oidc as unknown as { ctx: unknown }).ctx).toBe(seen[0]);
  });
});
