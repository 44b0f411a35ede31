// Latchkey as a library: accept Latchkey's credentials in any Koa service.
export { requireAuth, hasScope, bearerCredential, SUPER_SCOPES, type AuthState, type RequireAuthOptions } from './verification/require-auth.ts';
export { createTokenVerifiers, type TokenVerifierOptions } from './verification/token-verifiers.ts';
export { createJwtVerifier, ALLOWED_JWT_ALGORITHMS, type JwtVerifierOptions } from './verification/jwt.ts';
export { createIntrospectionVerifier, type IntrospectionVerifierOptions } from './verification/introspection.ts';
export { discoverAuthServer, type AuthServerMetadata, type MetadataSource } from './verification/discovery.ts';
export { createCredentialCache, type CredentialCache, type CacheLookup } from './verification/cache.ts';
export type { AuthContext, CredentialVerifier } from './verification/types.ts';
export { ApiError, errorResponder, requestId, statusOf, type ErrorCode } from './errors.ts';
export { createLogger, type Logger } from './logger.ts';
export { createApiServer, type ApiServer, type ApiServerOptions } from './resource-server/server.ts';
export { routeScopes } from './resource-server/routes.ts';
export { createApiKeys, type ApiKeys, type ApiKeysOptions } from './api-keys/index.ts';
export { parseApiKey, type ParsedKey } from './api-keys/format.ts';
export { createClientIp } from './http/client-ip.ts';
export { tuneGarbageCollectorForServing } from './http/gc-tuning.ts';
