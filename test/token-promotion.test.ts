import { describe, expect, it } from 'vitest';
import { oldGenerationGrowth } from './fixture-command.ts';
import { POSTGRES_URL, postgresAvailable } from './harness.ts';

/** Bytes the server's old generation grew by while it answered 3,000 token requests of `grant`, four at a time. */
const growth = (grant: 'client_credentials' | 'refresh_token'): number => oldGenerationGrowth('token-promotion.ts', [grant, POSTGRES_URL]);

// What the token endpoint leaves in V8's old generation on PostgreSQL, four requests at a time:
// each young collection that promotes what finished requests held brings the next full
// collection, and its pause, nearer. With the code of each fix taken out: the PostgreSQL payload
// store's writes in flight in Sets emptied entry by entry (payload-store.ts, now createInFlight),
// 5.4-6.2 MB for client_credentials against 1.0-1.1 MB; the rows read together in one Map cleared
// every turn (read-together.ts, now createBatchMap), 5.8-6.1 MB for refresh_token against 2.5-2.9
// MB (on SQLite: 2.6 MB).
describe.skipIf(!(await postgresAvailable()))('token requests on PostgreSQL', () => {
  it('leave little in the old generation: client_credentials', () => {
    expect(growth('client_credentials')).toBeLessThan(3_000_000);
  });

  it('leave little in the old generation: refresh_token, rotating', () => {
    expect(growth('refresh_token')).toBeLessThan(4_500_000);
  });
});
