import type { Knex } from 'knex';
import type Provider from 'oidc-provider';
import { createClientService } from '../clients/service.ts';

const SECRET_NAME = 'api-introspection-client';

export interface ApiClientCredentials {
  clientId: string;
  clientSecret: string;
}

/**
 * The companion API's own client at the authorization server, registered as a resource server so
 * it may introspect any token. Created on first start and kept in `server_secrets` (next to the
 * cookie keys), so the quick start needs no setup; created again if someone deleted it.
 */
export async function ensureApiClient(provider: Provider, knex: Knex): Promise<ApiClientCredentials> {
  const clients = createClientService(provider, knex);
  const read = async (): Promise<ApiClientCredentials | undefined> => {
    const row: { value: string } | undefined = await knex('server_secrets').first('value').where({ name: SECRET_NAME });
    return row && (JSON.parse(row.value) as ApiClientCredentials);
  };

  const stored = await read();
  if (stored && (await clients.find(stored.clientId))) return stored;
  if (stored) await knex('server_secrets').where({ name: SECRET_NAME, value: JSON.stringify(stored) }).delete();

  const created = await clients.create({
    name: 'Latchkey companion API',
    redirectUris: [],
    // It only introspects; a scope is required metadata, and this one grants no API access.
    scope: 'openid',
    grantTypes: ['client_credentials'],
    resourceServer: true,
  });
  const mine: ApiClientCredentials = { clientId: created.client_id, clientSecret: created.client_secret! };
  await knex('server_secrets').insert({ name: SECRET_NAME, value: JSON.stringify(mine) }).onConflict('name').ignore();
  // Another process may have won the race to provision; keep its client and drop ours.
  const winner = (await read())!;
  if (winner.clientId !== mine.clientId) await clients.delete(mine.clientId);
  return winner;
}
