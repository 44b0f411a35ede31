import Provider, { errors, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { JWK } from 'jose';
import { KnexAdapter } from '../../adapters/knex-adapter.ts';
import type { UserStore } from '../accounts/store.ts';
import { apiScopes, oidcScopes, type Config } from '../config.ts';
import type { Database } from '../db/knex.ts';
import { renderPage } from '../http/views.ts';
import type { Logger } from '../logger.ts';
import { findClientsByStoredObject } from './client-instances.ts';
import { externalSigningFeature, nodeSigningKeys } from './node-signing.ts';
import { issueTokenIdsInOrder } from './token-ids.ts';

export const routes = {
  authorization: '/oauth/authorize',
  token: '/oauth/token',
  introspection: '/oauth/introspect',
  revocation: '/oauth/revoke',
  userinfo: '/oauth/userinfo',
  jwks: '/oauth/jwks',
  end_session: '/oauth/logout',
} as const;

/** What a client reads to learn the server's configuration and keys (discovery and the JWKS). */
export const metadataPaths = ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server', routes.jwks] as const;

export interface ProviderDeps {
  config: Config;
  db: Database;
  users: UserStore;
  jwks: { keys: JWK[] };
  cookieKeys: string[];
  logger: Logger;
}

const requestsOnlyOidcScopes = (scope: string | undefined): boolean => {
  const requested = scope?.split(' ').filter(Boolean) ?? [];
  return requested.length > 0 && requested.every((s) => (oidcScopes as readonly string[]).includes(s));
};

type Features = NonNullable<Configuration['features']>;

/**
 * Resource indicators: tokens are for the companion API (`audience`) unless the request asks only
 * for OpenID Connect scopes, in which case the token is for userinfo (which refuses tokens with an
 * audience). Shared with the benchmark's bare oidc-provider, so both issue the same tokens.
 */
export function apiResourceIndicators(options: { audience: string; accessTokenTtl: number; jwt: boolean }): Features['resourceIndicators'] {
  const apiResource = {
    scope: apiScopes.join(' '),
    audience: options.audience,
    accessTokenTTL: options.accessTokenTtl,
    accessTokenFormat: options.jwt ? 'jwt' : 'opaque',
    jwt: { sign: { alg: 'ES256' } },
  } as const;
  return {
    enabled: true,
    async defaultResource(ctx, _client, oneOf) {
      if (oneOf) return oneOf;
      return requestsOnlyOidcScopes(ctx.oidc.params?.scope as string | undefined) ? undefined : options.audience;
    },
    useGrantedResource: async () => true,
    async getResourceServerInfo(_ctx, resourceIndicator) {
      if (resourceIndicator === options.audience) return apiResource;
      throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
    },
  };
}

/** Whether a client is registered as a resource server (`resource_server: true`). */
export function isResourceServer(client: object | undefined): boolean {
  // The instance holds the extra metadata as registered; metadata() would rebuild every field.
  return (client as { resource_server?: unknown } | undefined)?.resource_server === true;
}

/**
 * Who may introspect a token: the client it was issued to, and any resource server. Shared with
 * the benchmark's bare oidc-provider.
 */
export const introspectionAllowed = async (_ctx: KoaContextWithOIDC, client: { clientId: string }, token: { clientId?: string }): Promise<boolean> =>
  token.clientId === client.clientId || isResourceServer(client);

/** Token lifetimes and refresh-token rules; shared with the benchmark's bare oidc-provider. */
export function tokenPolicy(options: { accessTokenTtl: number; refreshTokenTtl: number }): Pick<Configuration, 'ttl' | 'issueRefreshToken' | 'rotateRefreshToken'> {
  return {
    ttl: {
      AccessToken: options.accessTokenTtl,
      ClientCredentials: options.accessTokenTtl,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 3600,
      RefreshToken: options.refreshTokenTtl,
      // The grant outlives its refresh tokens, or refresh and introspection fail when it is gone.
      Grant: options.refreshTokenTtl,
      Session: 14 * 24 * 3600,
    },
    // OIDC requests get a refresh token when offline_access was granted; plain OAuth requests
    // (no openid scope, like the guide's `scope=read write`) whenever the client may refresh.
    async issueRefreshToken(_ctx, client, code) {
      if (!client.grantTypeAllowed('refresh_token')) return false;
      return code.scopes.has('offline_access') || !code.scopes.has('openid');
    },
    // Every refresh rotates, so a stolen refresh token is detected the moment both parties use it.
    rotateRefreshToken: () => true,
  };
}

export function createProvider({ config, db, users, jwks, cookieKeys, logger }: ProviderDeps): Provider {
  const configuration: Configuration = {
    adapter: (name: string) => new KnexAdapter(db.knex, name),
    clients: [],
    async findAccount(_ctx, sub) {
      const user = await users.findById(sub);
      if (!user) return undefined;
      return {
        accountId: user.id,
        async claims() {
          return { sub: user.id, email: user.email, email_verified: false, name: user.name ?? undefined };
        },
      };
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    // Every scope a client may be registered with; API scopes are also granted per resource below.
    scopes: [...oidcScopes, ...apiScopes],
    jwks: { keys: nodeSigningKeys(jwks.keys) },
    cookies: {
      keys: cookieKeys,
      long: { signed: true, httpOnly: true, sameSite: 'lax' },
      short: { signed: true, httpOnly: true, sameSite: 'lax' },
    },
    routes,
    responseTypes: ['code'],
    pkce: {
      // Required from public clients; accepted from confidential ones. Only S256 is supported.
      required: (_ctx, client) => client.clientAuthMethod === 'none',
    },
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      id_token_signed_response_alg: 'ES256',
      token_endpoint_auth_method: 'client_secret_basic',
    },
    extraClientMetadata: {
      // A client registered as a resource server may introspect tokens issued to other clients.
      properties: ['resource_server'],
      validator(_ctx, key, value) {
        if (key === 'resource_server' && value !== undefined && typeof value !== 'boolean') {
          throw new errors.InvalidClientMetadata('resource_server must be a boolean');
        }
      },
    },
    features: {
      devInteractions: { enabled: false },
      externalSigningSupport: externalSigningFeature,
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: introspectionAllowed },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          await renderPage(ctx as never, 'logout', { form });
        },
        async postLogoutSuccessSource(ctx) {
          await renderPage(ctx as never, 'message', { title: 'Signed out', message: 'You are signed out of Latchkey.' });
        },
      },
      resourceIndicators: apiResourceIndicators({ audience: config.apiAudience, accessTokenTtl: config.accessTokenTtl, jwt: config.jwtAccessTokens }),
    },
    ...tokenPolicy(config),
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    async renderError(ctx, out, error) {
      logger.debug('authorization error page', { error: out.error, status: (error as { status?: number }).status });
      await renderPage(ctx as never, 'error', { error: out.error, description: out.error_description }, ctx.status);
    },
    clockTolerance: 5,
    enabledJWA: {
      // Clients may sign their own JWTs (private_key_jwt, client_secret_jwt) with these.
      clientAuthSigningAlgValues: ['ES256', 'EdDSA', 'RS256', 'PS256', 'HS256'],
    },
  };

  const provider = new Provider(config.issuer, configuration);
  provider.proxy = config.trustProxy;
  findClientsByStoredObject(provider);
  issueTokenIdsInOrder(provider);

  // The token endpoint answers invalid_grant with a generic description and keeps the reason
  // ("PKCE verification failed", "authorization code already consumed") to itself; developers
  // debugging a flow need it, and it reveals nothing about other clients, so put it in the answer.
  provider.on('grant.error', (ctx: KoaContextWithOIDC, err: { error?: string; error_detail?: string }) => {
    const body = ctx.body as { error?: string; error_description?: string } | undefined;
    if (err.error === 'invalid_grant' && err.error_detail && body?.error === 'invalid_grant') {
      body.error_description = err.error_detail;
    }
  });
  provider.on('server_error', (ctx: KoaContextWithOIDC, err: Error) => {
    logger.error('server error', { path: ctx.path, error: err.message });
  });
  return provider;
}
