import type { Knex } from 'knex';

// API keys. A key (its id, name, scopes, usage, events) outlives its secrets: rolling a key adds a
// secret and gives the old one a grace period. Secrets are stored only as SHA-256 digests.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('api_keys', (t) => {
    t.string('id', 64).primary();
    t.string('user_id', 64).notNullable().references('id').inTable('users').onDelete('CASCADE');
    t.string('name', 200).notNullable();
    t.enu('environment', ['test', 'live']).notNullable();
    t.boolean('restricted').notNullable();
    t.string('prefix', 16).notNullable(); // of the current secret, e.g. sk_live_
    t.string('last_four', 4).notNullable(); // of the current secret
    t.text('scopes'); // JSON array; null: the owner's full access (sk_ keys only)
    t.text('ip_allowlist'); // JSON array of CIDRs; null: any address
    t.bigInteger('expires_at'); // epoch ms; null: never
    t.bigInteger('created_at').notNullable();
    t.bigInteger('revoked_at');
    t.bigInteger('last_used_at');
    t.bigInteger('request_count').notNullable().defaultTo(0);
    t.index(['user_id', 'created_at']);
  });

  await knex.schema.createTable('api_key_secrets', (t) => {
    t.string('hash', 64).primary(); // SHA-256 of the secret, base64url
    t.string('key_id', 64).notNullable().references('id').inTable('api_keys').onDelete('CASCADE');
    t.string('prefix', 16).notNullable();
    t.string('last_four', 4).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('expires_at'); // set when the key is rolled: the end of this secret's grace period
    t.index(['key_id']);
  });

  await knex.schema.createTable('api_key_events', (t) => {
    t.increments('id');
    t.string('key_id', 64).notNullable().references('id').inTable('api_keys').onDelete('CASCADE');
    t.string('type', 40).notNullable();
    t.string('ip', 64);
    t.text('detail'); // JSON object
    t.bigInteger('created_at').notNullable();
    t.index(['key_id', 'id']);
  });

  // The addresses each key has been used from, so "used from a new IP" is recorded once per address.
  await knex.schema.createTable('api_key_ips', (t) => {
    t.string('key_id', 64).notNullable().references('id').inTable('api_keys').onDelete('CASCADE');
    t.string('ip', 64).notNullable();
    t.bigInteger('first_seen_at').notNullable();
    t.primary(['key_id', 'ip']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('api_key_ips');
  await knex.schema.dropTable('api_key_events');
  await knex.schema.dropTable('api_key_secrets');
  await knex.schema.dropTable('api_keys');
}
