import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { hashPassword, verifyAgainstNothing, verifyPassword } from './passwords.ts';

export interface User {
  id: string;
  email: string;
  name: string | null;
  createdAt: Date;
}

interface UserRow {
  id: string;
  email: string;
  name: string | null;
  password_hash: string;
  created_at: number | string;
}

const toUser = (row: UserRow): User => ({
  id: row.id,
  email: row.email,
  name: row.name,
  createdAt: new Date(Number(row.created_at)),
});

export class DuplicateEmailError extends Error {
  constructor(email: string) {
    super(`a user with email ${email} already exists`);
  }
}

export type UserStore = ReturnType<typeof createUserStore>;

export function createUserStore(knex: Knex) {
  const normaliseEmail = (email: string) => email.trim().toLowerCase();

  return {
    async create(input: { email: string; password: string; name?: string | null }): Promise<User> {
      const row: UserRow = {
        id: `usr_${randomUUID().replaceAll('-', '')}`,
        email: normaliseEmail(input.email),
        name: input.name ?? null,
        password_hash: await hashPassword(input.password),
        created_at: Date.now(),
      };
      try {
        await knex('users').insert(row);
      } catch (err) {
        if (/unique|duplicate/i.test(String((err as Error).message))) throw new DuplicateEmailError(row.email);
        throw err;
      }
      return toUser(row);
    },

    async findById(id: string): Promise<User | undefined> {
      const row: UserRow | undefined = await knex('users').first().where({ id });
      return row && toUser(row);
    },

    async findByEmail(email: string): Promise<User | undefined> {
      const row: UserRow | undefined = await knex('users').first().where({ email: normaliseEmail(email) });
      return row && toUser(row);
    },

    /** The user when email and password match; undefined otherwise, in the same time either way. */
    async authenticate(email: string, password: string): Promise<User | undefined> {
      const row: UserRow | undefined = await knex('users').first().where({ email: normaliseEmail(email) });
      if (!row) return verifyAgainstNothing(password).then(() => undefined);
      return (await verifyPassword(password, row.password_hash)) ? toUser(row) : undefined;
    },

    async list(): Promise<User[]> {
      const rows: UserRow[] = await knex('users').select().orderBy('created_at');
      return rows.map(toUser);
    },
  };
}
