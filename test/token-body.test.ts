import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { tokenRequest } from './flows.ts';
import { startAuthServer, type TestAuthServer } from './harness.ts';

// A file of its own: oidc-provider warns at most once per process, so the spy must see the first
// token request the library ever handles.
describe('the token endpoint\'s body reader', () => {
  let as: TestAuthServer;
  const warnings: string[] = [];

  beforeAll(async () => {
    vi.spyOn(console, 'warn').mockImplementation((...args: unknown[]) => void warnings.push(args.join(' ')));
    as = await startAuthServer();
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await as?.close({ removeDatabase: true });
  });

  it('hands JSON and form bodies to oidc-provider without it warning about an upstream body parser', async () => {
    const machine = await as.createClient({ grantTypes: ['client_credentials'], redirectUris: [], scope: 'read' });
    const body = { grant_type: 'client_credentials', scope: 'read', client_id: machine.client_id, client_secret: machine.client_secret! };
    for (const json of [true, false]) {
      const { status } = await tokenRequest(as.url, body, { json });
      expect(status).toBe(200);
    }
    expect(warnings.filter((w) => w.includes('oidc-provider'))).toEqual([]);
  });
});
