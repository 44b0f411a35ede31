/** What the benchmark tells a server process to start, and what the server reports back. */

export type ServerKind = 'koa' | 'peer' | 'latchkey' | 'latchkey-api';
export type TokenMode = 'opaque' | 'jwt';
export type DatabaseKind = 'sqlite' | 'postgres';

export interface ServerSpec {
  kind: ServerKind;
  /** The access-token format for the API resource (Latchkey's JWT_ACCESS_TOKENS). */
  mode: TokenMode;
  database?: DatabaseKind;
  /** Where temporary SQLite files go. */
  tmpDir: string;
  postgresUrl?: string;
  /** latchkey-api: the authorization server it stands beside, and the database they share. */
  beside?: { authServerUrl: string; databaseUrl: string; introspector: ClientCredentials };
}

export interface ClientCredentials {
  clientId: string;
  clientSecret: string;
}

export interface ServerFixtures {
  /** Base URL of the authorization server (or of the hello-world app). */
  url: string;
  /** Latchkey: the database, for the companion API's process. */
  databaseUrl?: string;
  /** The companion API with its credential cache, in its own process as `latchkey api` runs it. */
  apiUrl?: string;
  /** The same API with the credential cache turned off: every request verifies from scratch. */
  apiNoCacheUrl?: string;
  clients?: {
    /** client_credentials, scope read write. */
    service: ClientCredentials;
    /** authorization_code + refresh_token, confidential. */
    web: ClientCredentials & { redirectUri: string };
    /** A resource server that may introspect any token. */
    introspector: ClientCredentials;
  };
  user?: { email: string; password: string };
  /** The user the refresh_token row's seed flows log in as (see shared.seedUser). */
  seedUser?: { email: string; password: string };
  /** API keys at the companion API: one that exists, a well-formed unknown one, one with a bad checksum. */
  apiKeys?: { valid: string; unknown: string; badChecksum: string };
}

export const READY = 'LATCHKEY_BENCH_READY ';

/**
 * The benchmark writes this line to a server's stdin; the server answers with a COLLECTIONS line:
 * the garbage collections its main thread made since it was last asked (see measureHalfLoad).
 */
export const ASK_COLLECTIONS = 'collections?';
export const COLLECTIONS = 'LATCHKEY_BENCH_COLLECTIONS ';

export interface Collections {
  /** Full (mark-compact) collections. */
  full: number;
  /**
   * Of those, the ones V8's memory reducer started: when the process looks idle, or, busy or not,
   * 100 s after the last full collection (its watchdog). Of V8's collections, these alone carry the
   * callback flag kGCCallbackFlagCollectAllExternalMemory without
   * kGCCallbackFlagSynchronousPhantomCallbackProcessing (those for external memory carry both).
   */
  byMemoryReducer: number;
  /** The longest pause of any collection, in ms. */
  longestPauseMs: number;
}

/** Settings both the peer and Latchkey use, so their numbers compare like for like. */
export const shared = {
  audience: 'https://api.latchkey.bench',
  redirectUri: 'http://127.0.0.1:9/callback',
  webScope: 'openid offline_access profile email read write',
  user: { email: 'bench@example.com', password: 'correct horse battery staple', name: 'Bench User' },
  // The refresh_token row's seed tokens come from complete authorization-code flows (before every
  // turn: the tokens in flight when a turn ends are lost), logged in as this second user, whose
  // password hash is made with scrypt parameters 32 times cheaper than an account's. With
  // Latchkey's own (the first user's, which the authorization-code flow row logs in as) the row
  // took 185 s of a run here, 75 s with these. A refresh does the same work for either user.
  seedUser: { email: 'seed@example.com', password: 'seed user password', name: 'Seed User' },
  seedUserHash: { N: 2 ** 10, r: 8, p: 1 },
  accessTokenTtl: 3600,
  refreshTokenTtl: 30 * 24 * 3600,
} as const;
