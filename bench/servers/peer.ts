import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import type { Context, Next } from 'koa';
import Provider, { type ClientMetadata, type Configuration } from 'oidc-provider';
import { hashPassword, verifyPassword } from '../../src/accounts/passwords.ts';
import { apiScopes, oidcScopes } from '../../src/config.ts';
import { apiResourceIndicators, introspectionAllowed, tokenPolicy } from '../../src/oidc/provider.ts';
import { shared, type ServerFixtures, type TokenMode } from '../protocol.ts';

/**
 * The peer: oidc-provider 9 with its own in-memory adapter on bare Koa/http, configured like
 * Latchkey (same clients, scopes, routes, TTLs, signing algorithm, refresh-token rules). Its login
 * checks an scrypt hash with Latchkey's parameters, so the authorization-code flow compares like for like.
 */
export async function start(mode: TokenMode): Promise<{ fixtures: ServerFixtures; close(): Promise<void> }> {
  const server = http.createServer();
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const secret = () => randomBytes(32).toString('base64url');
  const clients = {
    service: { clientId: 'peer_service', clientSecret: secret() },
    web: { clientId: 'peer_web', clientSecret: secret(), redirectUri: shared.redirectUri },
    introspector: { clientId: 'peer_introspector', clientSecret: secret() },
  };
  const metadata = ([
    {
      client_id: clients.service.clientId, client_secret: clients.service.clientSecret, client_name: 'Bench service',
      grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: 'read write', resource_server: false,
    },
    {
      client_id: clients.web.clientId, client_secret: clients.web.clientSecret, client_name: 'Bench web app',
      grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], redirect_uris: [shared.redirectUri],
      scope: shared.webScope, resource_server: false,
    },
    {
      client_id: clients.introspector.clientId, client_secret: clients.introspector.clientSecret, client_name: 'Bench API',
      grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: 'openid', resource_server: true,
    },
  ] as ClientMetadata[]).map((m): ClientMetadata => ({ ...m, token_endpoint_auth_method: 'client_secret_basic' }));

  const keys: JWK[] = [];
  for (const alg of ['ES256', 'RS256'] as const) {
    const { privateKey } = await generateKeyPair(alg, { extractable: true });
    keys.push({ ...(await exportJWK(privateKey)), kid: `${alg}-peer`, alg, use: 'sig' });
  }
  const user = { id: 'usr_peer', ...shared.user, passwordHash: await hashPassword(shared.user.password) };
  const seeder = { id: 'usr_peer_seed', ...shared.seedUser, passwordHash: await hashPassword(shared.seedUser.password, shared.seedUserHash) };
  const users = new Map([user, seeder].map((u) => [u.id, u]));
  const cookieKey = secret();

  const configuration: Configuration = {
    clients: metadata,
    async findAccount(_ctx, sub) {
      const account = users.get(sub);
      if (!account) return undefined;
      return { accountId: account.id, claims: async () => ({ sub: account.id, email: account.email, email_verified: false, name: account.name }) };
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    scopes: [...oidcScopes, ...apiScopes],
    jwks: { keys },
    cookies: {
      keys: [cookieKey],
      long: { signed: true, httpOnly: true, sameSite: 'lax' },
      short: { signed: true, httpOnly: true, sameSite: 'lax' },
    },
    routes: {
      authorization: '/oauth/authorize', token: '/oauth/token', introspection: '/oauth/introspect', revocation: '/oauth/revoke',
      userinfo: '/oauth/userinfo', jwks: '/oauth/jwks', end_session: '/oauth/logout',
    },
    responseTypes: ['code'],
    pkce: { required: (_ctx, client) => client.clientAuthMethod === 'none' },
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      id_token_signed_response_alg: 'ES256',
      token_endpoint_auth_method: 'client_secret_basic',
    },
    extraClientMetadata: { properties: ['resource_server'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: introspectionAllowed },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      // Latchkey's own rules, so both issue the same tokens.
      resourceIndicators: apiResourceIndicators({ audience: shared.audience, accessTokenTtl: shared.accessTokenTtl, jwt: mode === 'jwt' }),
    },
    ...tokenPolicy(shared),
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    clockTolerance: 5,
    enabledJWA: { clientAuthSigningAlgValues: ['ES256', 'EdDSA', 'RS256', 'PS256', 'HS256'] },
  };

  const provider = new Provider(url, configuration);
  provider.use(interactions(provider, [...users.values()], cookieKey));
  server.on('request', provider.callback());

  return {
    fixtures: { url, clients, user: { email: user.email, password: user.password }, seedUser: { email: seeder.email, password: seeder.password } },
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

async function readForm(ctx: Context): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

const page = (title: string, action: string, csrf: string, fields: string) => `<!doctype html><html><head><title>${title}</title></head>
<body><main><h1>${title}</h1><form method="post" action="${action}"><input type="hidden" name="csrf" value="${csrf}">${fields}
<button type="submit">Continue</button></form></main></body></html>`;

/** The least an app must add to the library: a login page with a password check, and a consent page. */
function interactions(provider: Provider, users: { id: string; email: string; passwordHash: string }[], csrfKey: string) {
  const csrfFor = (uid: string) => createHmac('sha256', csrfKey).update(`interaction:${uid}`).digest('base64url');
  const csrfValid = (uid: string, given: string | null) => {
    const expected = Buffer.from(csrfFor(uid));
    const actual = Buffer.from(given ?? '');
    return actual.length === expected.length && timingSafeEqual(actual, expected);
  };
  return async (ctx: Context, next: Next) => {
    const match = /^\/interaction\/([^/]+)(?:\/(login|confirm))?$/.exec(ctx.path);
    if (!match) return next();
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    ctx.set('Cache-Control', 'no-store');
    if (ctx.method === 'GET' && !match[2]) {
      ctx.type = 'html';
      ctx.body = details.prompt.name === 'login'
        ? page('Sign in', `/interaction/${details.uid}/login`, csrfFor(details.uid), '<input name="email"><input name="password" type="password">')
        : page('Allow access?', `/interaction/${details.uid}/confirm`, csrfFor(details.uid), '');
      return undefined;
    }
    if (ctx.method !== 'POST') return next();
    const form = await readForm(ctx);
    if (!csrfValid(details.uid, form.get('csrf'))) {
      ctx.status = 403;
      ctx.body = 'forbidden';
      return undefined;
    }
    if (match[2] === 'login') {
      const user = users.find((u) => u.email === form.get('email'));
      const ok = user !== undefined && (await verifyPassword(form.get('password') ?? '', user.passwordHash));
      if (!ok) {
        ctx.status = 401;
        ctx.body = 'wrong email or password';
        return undefined;
      }
      return provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: user.id } }, { mergeWithLastSubmission: false });
    }
    const { prompt, params, session, grantId } = details;
    const grant = grantId ? await provider.Grant.find(grantId) : new provider.Grant({ accountId: session!.accountId, clientId: String(params.client_id) });
    const consent = prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
    if (consent.missingOIDCScope?.length) grant!.addOIDCScope(consent.missingOIDCScope.join(' '));
    if (consent.missingOIDCClaims?.length) grant!.addOIDCClaims(consent.missingOIDCClaims);
    for (const [resource, scopes] of Object.entries(consent.missingResourceScopes ?? {})) grant!.addResourceScope(resource, scopes.join(' '));
    const saved = await grant!.save();
    return provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId: saved } }, { mergeWithLastSubmission: true });
  };
}
