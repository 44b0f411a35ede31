import { z } from 'zod';
import { ApiError } from '../errors.ts';

const metadataSchema = z.object({
  issuer: z.url(),
  jwks_uri: z.url(),
  introspection_endpoint: z.url().optional(),
});

export type AuthServerMetadata = z.infer<typeof metadataSchema>;

/** Resolves the authorization server's metadata (RFC 8414); fetched once, fetched again after a failure. */
export type MetadataSource = () => Promise<AuthServerMetadata>;

export const unreachable = () =>
  new ApiError('service_unavailable', 'The authorization server could not be reached to verify the credential; try again shortly.');

/**
 * Reads `/.well-known/oauth-authorization-server` from the authorization server, so the issuer,
 * the JWKS URL and the introspection endpoint come from the server itself rather than guesses.
 */
export function discoverAuthServer(authServerUrl: string, fetchImpl: typeof fetch = fetch): MetadataSource {
  const url = `${authServerUrl.replace(/\/$/, '')}/.well-known/oauth-authorization-server`;
  let pending: Promise<AuthServerMetadata> | undefined;
  const load = async () => {
    const res = await fetchImpl(url, { signal: AbortSignal.timeout(5000), headers: { accept: 'application/json' } });
    if (!res.ok) throw new Error(`${url} answered ${res.status}`);
    return metadataSchema.parse(await res.json());
  };
  return () => {
    pending ??= load().catch((err: unknown) => {
      pending = undefined;
      throw Object.assign(unreachable(), { cause: err });
    });
    return pending;
  };
}
