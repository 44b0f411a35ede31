import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  // Everything oidc-provider persists: tokens, codes, grants, sessions, interactions, clients.
  await knex.schema.createTable('oidc_payloads', (t) => {
    t.string('model', 64).notNullable();
    t.string('id', 255).notNullable();
    t.text('payload').notNullable();
    t.string('grant_id', 255);
    t.string('user_code', 255);
    t.string('uid', 255);
    t.bigInteger('expires_at'); // epoch seconds; null = does not expire
    t.bigInteger('consumed_at');
    t.primary(['model', 'id']);
    t.index(['grant_id']);
    t.index(['uid']);
    t.index(['user_code']);
    t.index(['expires_at']);
  });

  await knex.schema.createTable('users', (t) => {
    t.string('id', 64).primary();
    t.string('email', 320).notNullable().unique();
    t.string('name', 200);
    t.string('password_hash', 255).notNullable();
    t.bigInteger('created_at').notNullable();
  });

  // Signing keys and cookie keys, generated on first start so a restart keeps every session valid.
  await knex.schema.createTable('signing_keys', (t) => {
    t.string('kid', 64).primary();
    t.string('alg', 16).notNullable();
    t.text('private_jwk').notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('retired_at'); // no longer signs; still published until tokens it signed expire
  });
  await knex.schema.createTable('server_secrets', (t) => {
    t.string('name', 64).primary();
    t.text('value').notNullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('server_secrets');
  await knex.schema.dropTable('signing_keys');
  await knex.schema.dropTable('users');
  await knex.schema.dropTable('oidc_payloads');
}
