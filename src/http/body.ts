import type { Context } from 'koa';

export const BODY_LIMIT = 64 * 1024;

export class BodyError extends Error {
  readonly status = 400;

}

/** Reads the raw body, refusing anything over the limit before buffering it all. */
export async function readRawBody(ctx: Context, limit = BODY_LIMIT): Promise<string> {
  const declared = ctx.request.length;
  if (declared !== undefined && declared > limit) {
    throw new BodyError(`request body is larger than ${limit / 1024} KiB`);
  }
  const chunks: Buffer[] = [];
  let received = 0;
  for await (const chunk of ctx.req) {
    received += (chunk as Buffer).length;
    if (received > limit) throw new BodyError(`request body is larger than ${limit / 1024} KiB`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, received).toString('utf8');
}

/** Parses an application/x-www-form-urlencoded body, refusing repeated fields. */
export function parseForm(raw: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of new URLSearchParams(raw)) {
    if (Object.hasOwn(out, key)) throw new BodyError(`the ${key} parameter must not be provided twice`);
    out[key] = value;
  }
  return out;
}

/** The member names of a valid JSON object's top level, in order and with any repeats. */
function topLevelNames(raw: string): string[] {
  const names: string[] = [];
  let depth = 0;
  for (let i = 0; i < raw.length; i += 1) {
    const c = raw[i];
    if (c === '"') {
      let end = i + 1;
      while (raw[end] !== '"') end += raw[end] === '\\' ? 2 : 1;
      let next = end + 1;
      while (/\s/.test(raw[next] ?? '')) next += 1;
      if (depth === 1 && raw[next] === ':') names.push(JSON.parse(raw.slice(i, end + 1)) as string);
      i = end;
    } else if (c === '{' || c === '[') depth += 1;
    else if (c === '}' || c === ']') depth -= 1;
  }
  return names;
}

/**
 * Parses a JSON object whose values are strings (or numbers, kept as their decimal form). A member
 * given twice is refused, as a repeated form field is: JSON.parse would silently keep the last.
 */
export function parseJsonParams(raw: string): Record<string, string> {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new BodyError('the request body is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new BodyError('the request body must be a JSON object');
  }
  const names = topLevelNames(raw);
  const repeated = names.find((name, i) => names.indexOf(name) !== i);
  if (repeated !== undefined) throw new BodyError(`the ${repeated} parameter must not be provided twice`);
  const out: Record<string, string> = {};
  for (const [key, v] of Object.entries(value)) {
    if (typeof v === 'string') out[key] = v;
    else if (typeof v === 'number' && Number.isFinite(v)) out[key] = String(v);
    else if (v !== null) throw new BodyError(`the ${key} parameter must be a string`);
  }
  return out;
}
