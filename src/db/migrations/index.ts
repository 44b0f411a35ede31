import type { Knex } from 'knex';
import * as initial from './001_initial.ts';
import * as resourceData from './002_resource_data.ts';
import * as apiKeys from './003_api_keys.ts';
import * as sparsePayloadIndexes from './004_sparse_payload_indexes.ts';

interface Migration {
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

// Migrations are listed in code, not discovered on disk, so they run the same from any directory.
const migrations: ReadonlyArray<[string, Migration]> = [
  ['001_initial', initial],
  ['002_resource_data', resourceData],
  ['003_api_keys', apiKeys],
  ['004_sparse_payload_indexes', sparsePayloadIndexes],
];

export const migrationSource: Knex.MigrationSource<Migration> = {
  getMigrations: async () => migrations.map(([, m]) => m),
  getMigrationName: (m) => migrations.find(([, candidate]) => candidate === m)![0],
  getMigration: async (m) => m,
};
