import type { Knex } from 'knex';

// Most stored payloads have no grant id, session uid or device user code (client-credentials
// tokens, sessions, interactions), yet each insert added an entry for its NULL to all three indexes:
// three more B-tree pages written per issued token. Indexing only the rows that have the value
// serves every lookup the same (`column = ?` implies NOT NULL, on SQLite and PostgreSQL alike).
const SPARSE = ['grant_id', 'uid', 'user_code'] as const;

export async function up(knex: Knex): Promise<void> {
  for (const column of SPARSE) {
    await knex.schema.alterTable('oidc_payloads', (t) => {
      t.dropIndex([column]);
      t.index([column], `oidc_payloads_${column}_index`, { predicate: knex.whereNotNull(column) });
    });
  }
}

export async function down(knex: Knex): Promise<void> {
  for (const column of SPARSE) {
    await knex.schema.alterTable('oidc_payloads', (t) => {
      t.dropIndex([column]);
      t.index([column]);
    });
  }
}
