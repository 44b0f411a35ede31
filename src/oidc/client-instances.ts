import type Provider from 'oidc-provider';

type ClientClass = Provider['Client'];
type ClientInstance = InstanceType<ClientClass>;

/**
 * oidc-provider finds the Client instance of a registered client by hashing its stored metadata
 * (JSON plus SHA-256) on every lookup, and introspection looks two clients up. Our adapter hands
 * out one frozen metadata object per stored version of a client (adapters/client-cache.ts), so
 * the instance the library built from that object can be found by the object itself: the same
 * object means the same metadata. A changed or deleted client comes back as a new object or none,
 * and then the library's own lookup runs, unchanged.
 */
export function findClientsByStoredObject(provider: Provider): void {
  const Client = provider.Client as ClientClass & { adapter: { find(id: string): Promise<object | undefined> } };
  const libraryFind = Client.find.bind(Client);
  const built = new WeakMap<object, ClientInstance>();

  const buildAndRemember = async (id: string, stored: object | undefined) => {
    const client = await libraryFind(id);
    // Remembered only when the library built it from this very object (nothing changed meanwhile).
    if (client && stored && Object.isFrozen(stored) && (await Client.adapter.find(id)) === stored) built.set(stored, client);
    return client;
  };
  Client.find = (id: string) => {
    if (typeof id !== 'string' || id === '') return libraryFind(id);
    return Client.adapter.find(id).then((stored) => (stored && built.get(stored)) || buildAndRemember(id, stored));
  };
}
