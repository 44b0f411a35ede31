import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import proxyaddr from 'proxy-addr';
import { z } from 'zod';

/** The project's root folder, so every command works from any working directory. */
export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Scope name -> the sentence the consent page shows for it. Lives in config/scopes.json. */
export const scopeDescriptions: Readonly<Record<string, string>> = Object.freeze(
  JSON.parse(readFileSync(path.join(projectRoot, 'config', 'scopes.json'), 'utf8')),
);

/** Scopes defined by OpenID Connect itself; every other scope belongs to the companion API. */
export const oidcScopes = ['openid', 'profile', 'email', 'offline_access'] as const;
export const apiScopes = Object.keys(scopeDescriptions).filter(
  (scope) => !(oidcScopes as readonly string[]).includes(scope),
);

const port = z.coerce.number().int().min(0).max(65535);
const seconds = z.coerce.number().int().positive();
const flag = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

const envSchema = z.object({
  // Where the authorization server listens.
  PORT: port.default(3000),
  // The issuer URL; tokens carry it as `iss`. Defaults to http://localhost:PORT.
  ISSUER: z.url().optional(),
  // sqlite:/path, a plain file path, or postgres://... ; default ./data/latchkey.sqlite.
  DATABASE_URL: z.string().min(1).optional(),
  // Where the companion API listens.
  API_PORT: port.default(4000),
  // The authorization server as seen from the companion API.
  AUTH_SERVER_URL: z.url().optional(),
  // The companion API's resource identifier: the `aud` of the access tokens issued for it.
  API_AUDIENCE: z.url().optional(),
  // The companion API's introspection client (registered with --resource-server). Unset: the API
  // provisions its own in the shared database on first start.
  API_CLIENT_ID: z.string().min(1).optional(),
  API_CLIENT_SECRET: z.string().min(1).optional(),
  // Issue JWT (RFC 9068) access tokens for the companion API instead of opaque ones.
  JWT_ACCESS_TOKENS: flag.default(false),
  // Access tokens live one hour, as the guide says.
  ACCESS_TOKEN_TTL: seconds.default(3600),
  // Refresh tokens live 30 days; grants live as long, or refresh would fail when the grant is gone.
  REFRESH_TOKEN_TTL: seconds.default(30 * 24 * 3600),
  // The longest a verified opaque token or API key is trusted without asking again: a revocation
  // takes effect everywhere within this bound.
  VERIFICATION_CACHE_SECONDS: seconds.default(30),
  // The reverse proxies in front of Latchkey (comma-separated addresses, CIDRs, or loopback,
  // linklocal, uniquelocal). X-Forwarded-For and -Proto are believed only from these: anyone else
  // could forge an address and slip past an API key's IP allowlist. Default: none.
  TRUST_PROXY: z.string().default(''),
  // How often API key usage (counts, last use, new addresses, rejections) is written, in seconds.
  API_KEY_USAGE_FLUSH_SECONDS: seconds.default(5),
  // error | warn | info | debug
  LOG_LEVEL: z.enum(['error', 'warn', 'info', 'debug', 'silent']).default('info'),
});

export type Config = Readonly<{
  port: number;
  issuer: string;
  databaseUrl: string;
  apiPort: number;
  authServerUrl: string;
  apiAudience: string;
  apiClient: Readonly<{ clientId: string; clientSecret: string }> | undefined;
  jwtAccessTokens: boolean;
  accessTokenTtl: number;
  refreshTokenTtl: number;
  verificationCacheSeconds: number;
  /** Proxies whose X-Forwarded-* headers are believed (see http/client-ip.ts). */
  trustedProxies: readonly string[];
  /** Derived: whether any proxy is trusted, for Koa's and oidc-provider's `proxy` setting. */
  trustProxy: boolean;
  apiKeyUsageFlushSeconds: number;
  logLevel: 'error' | 'warn' | 'info' | 'debug' | 'silent';
}>;

export class ConfigError extends Error {}

/** Reads the environment once; the only place that touches process.env. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid configuration: ${problems}`);
  }
  const e = parsed.data;
  if (Boolean(e.API_CLIENT_ID) !== Boolean(e.API_CLIENT_SECRET)) {
    throw new ConfigError('invalid configuration: set both API_CLIENT_ID and API_CLIENT_SECRET, or neither');
  }
  const trustedProxies = ['', 'false', '0', 'none'].includes(e.TRUST_PROXY.trim()) ? [] : e.TRUST_PROXY.split(',').map((p) => p.trim()).filter(Boolean);
  try {
    proxyaddr.compile(trustedProxies);
  } catch (err) {
    throw new ConfigError(`invalid configuration: TRUST_PROXY lists the proxies to trust (addresses, CIDRs, or loopback, linklocal, uniquelocal): ${(err as Error).message}`);
  }
  const issuer = (e.ISSUER ?? `http://localhost:${e.PORT}`).replace(/\/$/, '');
  const config: Config = {
    port: e.PORT,
    issuer,
    databaseUrl: e.DATABASE_URL ?? path.join(projectRoot, 'data', 'latchkey.sqlite'),
    apiPort: e.API_PORT,
    authServerUrl: (e.AUTH_SERVER_URL ?? issuer).replace(/\/$/, ''),
    apiAudience: e.API_AUDIENCE ?? `http://localhost:${e.API_PORT}`,
    apiClient: e.API_CLIENT_ID && e.API_CLIENT_SECRET ? { clientId: e.API_CLIENT_ID, clientSecret: e.API_CLIENT_SECRET } : undefined,
    jwtAccessTokens: e.JWT_ACCESS_TOKENS,
    accessTokenTtl: e.ACCESS_TOKEN_TTL,
    refreshTokenTtl: e.REFRESH_TOKEN_TTL,
    verificationCacheSeconds: e.VERIFICATION_CACHE_SECONDS,
    trustedProxies: Object.freeze(trustedProxies),
    trustProxy: trustedProxies.length > 0,
    apiKeyUsageFlushSeconds: e.API_KEY_USAGE_FLUSH_SECONDS,
    logLevel: e.LOG_LEVEL,
    ...overrides,
  };
  return Object.freeze(config);
}
