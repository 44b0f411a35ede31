import type { Context } from 'koa';
import { z } from 'zod';
import { ApiError } from '../errors.ts';
import { readRawBody } from '../http/body.ts';

const email = z.email().max(320).transform((e) => e.trim().toLowerCase());
/** One line of text a person typed: no control characters (PostgreSQL refuses NUL outright). */
export const singleLine = (max: number) => z.string().trim().min(1).max(max).regex(/^[^\u0000-\u001f\u007f]*$/, 'must not contain control characters');
const name = singleLine(200);

export const newUser = z.strictObject({ email, name: name.nullable().optional() });
export const userChanges = z
  .strictObject({ email: email.optional(), name: name.nullable().optional() })
  .refine((v) => Object.keys(v).length > 0, { message: 'send at least one of email, name' });
export const newProject = z.strictObject({ name, description: z.string().max(2000).regex(/^[^\u0000]*$/, 'must not contain NUL characters').nullable().optional() });
export const page = z.strictObject({
  limit: z.coerce.number().int().min(1).max(100).default(50),
  offset: z.coerce.number().int().min(0).default(0),
});
export const resourceId = z.string().regex(/^[a-z]+_[0-9a-f]{32}$/, 'not a valid id');

/** "email: Invalid email address" — the field first, so the caller knows what to fix. */
function describe(error: z.ZodError): string {
  return error.issues
    .map((issue) => (issue.path.length ? `${issue.path.join('.')}: ${issue.message}` : issue.message))
    .join('; ');
}

export function parse<T extends z.ZodType>(schema: T, value: unknown, where: string): z.output<T> {
  const result = schema.safeParse(value);
  if (!result.success) throw new ApiError('invalid_request', `Invalid ${where}: ${describe(result.error)}.`);
  return result.data;
}

/** The JSON body, validated against `schema`; anything else is a 400 naming the problem. */
export async function jsonBody<T extends z.ZodType>(ctx: Context, schema: T): Promise<z.output<T>> {
  if (!ctx.is('application/json')) throw new ApiError('invalid_request', 'The request body must be JSON (Content-Type: application/json).');
  let value: unknown;
  try {
    value = JSON.parse(await readRawBody(ctx));
  } catch (err) {
    if (err instanceof SyntaxError) throw new ApiError('invalid_request', 'The request body is not valid JSON.');
    throw err;
  }
  return parse(schema, value, 'request body');
}
