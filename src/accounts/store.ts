import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { isPg, pgStatements } from '../db/pg-statements.ts';
import { readTogetherFor, USERS } from '../db/read-together.ts';
import { isBetterSqlite, sqliteStatements } from '../db/sqlite-statements.ts';
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

/** A row without its password hash: what every lookup but sign-in reads. */
type PublicRow = Omit<UserRow, 'password_hash'>;

const toUser = (row: PublicRow): User => ({
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

/**
 * The lookup by id behind every refresh and ID token (oidc-provider's findAccount): a statement
 * prepared once where the database allows, instead of one built by Knex's query builder each time.
 */
function findRowById(knex: Knex): (id: string) => Promise<PublicRow | undefined> {
  const columns = ['id', 'email', 'name', 'created_at'] as const;
  const viaKnex = async (id: string): Promise<PublicRow | undefined> => knex('users').first(...columns).where({ id });
  if (isBetterSqlite(knex)) {
    const sqlite = sqliteStatements(knex);
    const sql = `SELECT ${columns.join(', ')} FROM users WHERE id = ?`;
    return async (id) => (sqlite.usable() ? (sqlite.prepare(sql).get(id) as PublicRow | undefined) : viaKnex(id));
  }
  if (isPg(knex)) {
    const statement = pgStatements(knex);
    const sql = `SELECT ${columns.join(', ')} FROM users WHERE id = $1`;
    // A refresh or a code's ID token reads the account of a token's grant just after the token:
    // the token's read brought it (src/db/read-together.ts).
    const readTogether = readTogetherFor(knex);
    return async (id) => {
      const row = readTogether.get<PublicRow>(USERS, id);
      if (row !== undefined) return row ?? undefined;
      return (await statement('latchkey_user_by_id', sql, [id])).rows[0] as PublicRow | undefined;
    };
  }
  return viaKnex;
}

export type UserStore = ReturnType<typeof createUserStore>;

export function createUserStore(knex: Knex) {
  const normaliseEmail = (email: string) => email.trim().toLowerCase();
  const rowById = findRowById(knex);

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
      const row = await rowById(id);
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
