import type { Knex } from 'knex';

// The companion API's own data. Every row belongs to an environment: API keys keep sandbox ('test')
// and production ('live') data apart; OAuth and JWT access tokens act on 'live'.
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('api_users', (t) => {
    t.string('id', 64).primary();
    t.enu('environment', ['test', 'live']).notNullable();
    t.string('email', 320).notNullable();
    t.string('name', 200);
    t.string('created_by', 255).notNullable(); // the user or client whose credential created it
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
    t.unique(['environment', 'email']);
    t.index(['environment', 'created_at']);
  });

  await knex.schema.createTable('projects', (t) => {
    t.string('id', 64).primary();
    t.enu('environment', ['test', 'live']).notNullable();
    t.string('name', 200).notNullable();
    t.text('description');
    t.string('created_by', 255).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
    t.index(['environment', 'created_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('projects');
  await knex.schema.dropTable('api_users');
}
