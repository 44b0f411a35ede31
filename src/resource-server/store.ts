import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';

export type Environment = 'test' | 'live';

export interface ApiUser {
  id: string;
  email: string;
  name: string | null;
  created_at: string;
  updated_at: string;
}

export interface Project {
  id: string;
  name: string;
  description: string | null;
  created_at: string;
  updated_at: string;
}

interface Stamped {
  created_at: number | string;
  updated_at: number | string;
}
type ApiUserRow = Stamped & { id: string; environment: Environment; email: string; name: string | null; created_by: string };
type ProjectRow = Stamped & { id: string; environment: Environment; name: string; description: string | null; created_by: string };

const iso = (ms: number | string) => new Date(Number(ms)).toISOString();
const toUser = (r: ApiUserRow): ApiUser => ({ id: r.id, email: r.email, name: r.name, created_at: iso(r.created_at), updated_at: iso(r.updated_at) });
const toProject = (r: ProjectRow): Project => ({
  id: r.id, name: r.name, description: r.description, created_at: iso(r.created_at), updated_at: iso(r.updated_at),
});
const newId = (prefix: string) => `${prefix}_${randomUUID().replaceAll('-', '')}`;

export class DuplicateError extends Error {}
const isUniqueViolation = (err: unknown) => /unique|duplicate/i.test(String((err as Error).message));

export interface Page {
  limit: number;
  offset: number;
}

/** The companion API's data. Every query names its environment, so test and live data never mix. */
export function createResourceStore(knex: Knex) {
  return {
    users: {
      async list(env: Environment, page: Page): Promise<ApiUser[]> {
        const rows: ApiUserRow[] = await knex('api_users').where({ environment: env }).orderBy([{ column: 'created_at' }, { column: 'id' }]).limit(page.limit).offset(page.offset);
        return rows.map(toUser);
      },
      async find(env: Environment, id: string): Promise<ApiUser | undefined> {
        const row: ApiUserRow | undefined = await knex('api_users').first().where({ environment: env, id });
        return row && toUser(row);
      },
      async create(env: Environment, input: { email: string; name?: string | null }, createdBy: string): Promise<ApiUser> {
        const now = Date.now();
        const row: ApiUserRow = { id: newId('au'), environment: env, email: input.email, name: input.name ?? null, created_by: createdBy, created_at: now, updated_at: now };
        try {
          await knex('api_users').insert(row);
        } catch (err) {
          if (isUniqueViolation(err)) throw new DuplicateError(`a user with email ${input.email} already exists`);
          throw err;
        }
        return toUser(row);
      },
      async update(env: Environment, id: string, changes: { email?: string; name?: string | null }): Promise<ApiUser | undefined> {
        try {
          const updated = await knex('api_users').where({ environment: env, id }).update({ ...changes, updated_at: Date.now() });
          if (updated === 0) return undefined;
        } catch (err) {
          if (isUniqueViolation(err)) throw new DuplicateError(`a user with email ${changes.email} already exists`);
          throw err;
        }
        return this.find(env, id);
      },
      async delete(env: Environment, id: string): Promise<boolean> {
        return (await knex('api_users').where({ environment: env, id }).delete()) > 0;
      },
    },

    projects: {
      async list(env: Environment, page: Page): Promise<Project[]> {
        const rows: ProjectRow[] = await knex('projects').where({ environment: env }).orderBy([{ column: 'created_at' }, { column: 'id' }]).limit(page.limit).offset(page.offset);
        return rows.map(toProject);
      },
      async create(env: Environment, input: { name: string; description?: string | null }, createdBy: string): Promise<Project> {
        const now = Date.now();
        const row: ProjectRow = {
          id: newId('prj'), environment: env, name: input.name, description: input.description ?? null, created_by: createdBy, created_at: now, updated_at: now,
        };
        await knex('projects').insert(row);
        return toProject(row);
      },
    },
  };
}

export type ResourceStore = ReturnType<typeof createResourceStore>;
