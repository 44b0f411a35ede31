import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type Provider from 'oidc-provider';
import type { ClientMetadata } from 'oidc-provider';
import { KnexAdapter } from '../../adapters/knex-adapter.ts';
import { ClientValidationError } from './errors.ts';

export interface NewClient {
  name: string;
  redirectUris: string[];
  scope: string;
  public?: boolean;
  grantTypes?: string[];
  resourceServer?: boolean;
}

export interface ClientSummary {
  client_id: string;
  client_name: string;
  redirect_uris: string[];
  grant_types: string[];
  scope: string;
  token_endpoint_auth_method: string;
  resource_server: boolean;
}

const summarise = (m: ClientMetadata): ClientSummary => ({
  client_id: m.client_id,
  client_name: String(m.client_name ?? ''),
  redirect_uris: (m.redirect_uris as string[] | undefined) ?? [],
  grant_types: (m.grant_types as string[] | undefined) ?? [],
  scope: String(m.scope ?? ''),
  token_endpoint_auth_method: String(m.token_endpoint_auth_method ?? 'client_secret_basic'),
  resource_server: m.resource_server === true,
});

/** Registered OAuth clients, stored where oidc-provider reads them (its Client model). */
export function createClientService(provider: Provider, knex: Knex) {
  const store = new KnexAdapter(knex, 'Client');

  return {
    /** Registers a client; the secret is returned here once and never again. */
    async create(input: NewClient): Promise<{ client_id: string; client_secret?: string } & ClientSummary> {
      const grantTypes = input.grantTypes?.length ? input.grantTypes : ['authorization_code', 'refresh_token'];
      const usesRedirects = grantTypes.includes('authorization_code');
      if (usesRedirects && input.redirectUris.length === 0) {
        throw new ClientValidationError('at least one --redirect-uri is needed for the authorization_code grant');
      }
      if (input.public && grantTypes.includes('client_credentials')) {
        throw new ClientValidationError('a public client cannot use client_credentials: it has no secret to authenticate with');
      }
      const metadata: ClientMetadata = {
        client_id: `lk_${randomBytes(12).toString('base64url')}`,
        client_name: input.name,
        redirect_uris: input.redirectUris,
        grant_types: grantTypes,
        response_types: usesRedirects ? ['code'] : [],
        scope: input.scope.split(/\s+/).filter(Boolean).join(' '),
        token_endpoint_auth_method: input.public ? 'none' : 'client_secret_basic',
        resource_server: input.resourceServer === true,
        ...(input.public ? {} : { client_secret: randomBytes(32).toString('base64url') }),
      };
      try {
        await provider.Client.validate(metadata);
      } catch (err) {
        const e = err as { error_description?: string; message: string };
        throw new ClientValidationError(e.error_description ?? e.message);
      }
      await store.upsert(metadata.client_id, metadata);
      return { ...summarise(metadata), ...(metadata.client_secret ? { client_secret: String(metadata.client_secret) } : {}) };
    },

    async list(): Promise<ClientSummary[]> {
      const rows: { payload: string }[] = await knex('oidc_payloads').select('payload').where({ model: 'Client' }).orderBy('id');
      return rows.map((r) => summarise(JSON.parse(r.payload) as ClientMetadata));
    },

    async find(clientId: string): Promise<ClientSummary | undefined> {
      const metadata = await store.find(clientId);
      return metadata && summarise(metadata as ClientMetadata);
    },

    /** Deletes the client; its tokens stop working because their client no longer exists. */
    async delete(clientId: string): Promise<boolean> {
      if (!(await store.find(clientId))) return false;
      await store.destroy(clientId);
      return true;
    },
  };
}

export type ClientService = ReturnType<typeof createClientService>;
