import type { Context } from 'koa';

export const BODY_LIMIT = 64 * 1024;

export class BodyError extends Error {
  readonly status = 400;

}

/**
 * Reads the raw body, refusing anything over the limit before buffering it all. Plain stream
 * events and one promise: an async iterator over the request costs a promise per step, each one
 * dearer on Node 20 while oidc-provider's AsyncLocalStorage is in use.
 */
export function readRawBody(ctx: Context, limit = BODY_LIMIT): Promise<string> {
  const declared = Number(ctx.req.headers['content-length']);
  if (declared > limit) {
    return Promise.reject(new BodyError(`request body is larger than ${limit / 1024} KiB`));
  }
  const { req } = ctx;
  // Read already (by whatever ran before): there is nothing left, and no 'end' to wait for.
  if (req.readableEnded) return Promise.resolve('');
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    // The listeners stay on this request (it is read once and then dropped): settling twice, or
    // data after a refusal, is ignored.
    let settled = false;
    const settle = (err: Error | undefined) => {
      if (settled) return;
      settled = true;
      if (err) reject(err);
      else resolve((chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received)).toString('utf8'));
    };
    req.on('data', (chunk: Buffer) => {
      if (settled) return;
      received += chunk.length;
      if (received <= limit) chunks.push(chunk);
      // The rest is read and dropped, so the answer can still go out on this connection.
      else settle(new BodyError(`request body is larger than ${limit / 1024} KiB`));
    });
    req.on('end', () => settle(undefined));
    req.on('error', settle);
    // 'close' also comes after every answer: no error is made (a stack captured) for that one.
    req.on('close', () => settled || settle(new Error('the request was aborted before its body arrived')));
  });
}

/** Parses an application/x-www-form-urlencoded body, refusing repeated fields. */
export function parseForm(raw: string): Record<string, string> {
  checkFormFields(raw);
  return Object.fromEntries(new URLSearchParams(raw));
}

const NONE: ReadonlySet<string> = new Set();

/**
 * Refuses a form body with a repeated field, except those in `repeatable`, without decoding the
 * values: on its own for a form that is handed on as it came (the token endpoint's).
 */
export function checkFormFields(raw: string, repeatable = NONE): void {
  // One field (introspection's and revocation's usual `token=...`) cannot repeat.
  if (!raw.includes('&')) return;
  const names = new Set<string>();
  for (const pair of raw.split('&')) {
    if (pair === '') continue;
    const end = pair.indexOf('=');
    let name = end === -1 ? pair : pair.slice(0, end);
    // Encoded names (rare) are decoded exactly as URLSearchParams decodes them.
    if (name.includes('%') || name.includes('+')) name = new URLSearchParams(pair).keys().next().value ?? name;
    if (names.has(name) && !repeatable.has(name)) throw new BodyError(`the ${name} parameter must not be provided twice`);
    names.add(name);
  }
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
 * Parses a JSON object whose values are strings (or numbers, kept as their decimal form) into the
 * fields of the equivalent form, in order. A member in `repeatable` may also be an array of
 * strings: one field for each, as a form repeats it. A member given twice is refused, as a
 * repeated form field is: JSON.parse would silently keep the last.
 */
export function parseJsonParams(raw: string, repeatable = NONE): [string, string][] {
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
  const fields: [string, string][] = [];
  const field = (key: string, v: unknown): void => {
    if (typeof v === 'string') fields.push([key, v]);
    else if (typeof v === 'number' && Number.isFinite(v)) fields.push([key, String(v)]);
    else if (v !== null) throw new BodyError(`the ${key} parameter must be a string${repeatable.has(key) ? ' or an array of strings' : ''}`);
  };
  for (const [key, v] of Object.entries(value)) {
    if (Array.isArray(v) && repeatable.has(key) && v.every((each) => typeof each === 'string')) v.forEach((each) => field(key, each));
    else field(key, v);
  }
  return fields;
}
