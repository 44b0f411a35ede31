import { createHash, randomBytes } from 'node:crypto';

/** A minimal cookie jar for driving the browser-facing pages with fetch. */
export class CookieJar {
  readonly #cookies = new Map<string, string>();

  store(response: Response): void {
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      if (/expires=Thu, 01 Jan 1970/i.test(line) || value === '') this.#cookies.delete(name);
      else this.#cookies.set(name, value);
    }
  }

  header(): string {
    return [...this.#cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

export function pkcePair(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

/** GET with cookies, without following redirects. */
export async function get(url: string, jar: CookieJar): Promise<Response> {
  const res = await fetch(url, { redirect: 'manual', headers: { cookie: jar.header() } });
  jar.store(res);
  return res;
}

export async function postForm(url: string, jar: CookieJar, form: Record<string, string>): Promise<Response> {
  const res = await fetch(url, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie: jar.header(), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form),
  });
  jar.store(res);
  return res;
}

export const csrfOf = (html: string): string => /name="csrf" value="([^"]+)"/.exec(html)?.[1] ?? '';

/** Follows redirects on the authorization server until it sends the browser back to the app. */
export async function followToApp(start: Response, issuer: string, jar: CookieJar): Promise<{ response: Response; location?: URL }> {
  let res = start;
  for (let hops = 0; hops < 10 && res.status >= 300 && res.status < 400; hops += 1) {
    const location = new URL(res.headers.get('location')!, issuer);
    if (location.origin !== new URL(issuer).origin) return { response: res, location };
    res = await get(location.href, jar);
  }
  return { response: res };
}

export interface AuthorizeOptions {
  issuer: string;
  clientId: string;
  redirectUri: string;
  scope: string;
  email: string;
  password: string;
  state?: string;
  pkce?: { challenge: string; method?: string };
  extra?: Record<string, string>;
  jar?: CookieJar;
  decision?: 'allow' | 'deny';
}

/**
 * Drives GET /oauth/authorize -> login page -> consent page -> redirect, as a browser without
 * JavaScript would, and returns where the server finally sent the browser.
 */
export async function authorize(o: AuthorizeOptions): Promise<{ redirect: URL; jar: CookieJar }> {
  const jar = o.jar ?? new CookieJar();
  const params = new URLSearchParams({
    client_id: o.clientId,
    redirect_uri: o.redirectUri,
    response_type: 'code',
    scope: o.scope,
    ...(o.state ? { state: o.state } : {}),
    ...(o.pkce ? { code_challenge: o.pkce.challenge, code_challenge_method: o.pkce.method ?? 'S256' } : {}),
    ...o.extra,
  });
  let { response, location } = await followToApp(await get(`${o.issuer}/oauth/authorize?${params}`, jar), o.issuer, jar);
  for (let step = 0; step < 3 && !location; step += 1) {
    const html = await response.text();
    const url = new URL(response.url || '', o.issuer);
    const uid = /\/interaction\/([^/"]+)\/(login|confirm|abort)/.exec(html)?.[1];
    if (!uid) throw new Error(`expected a login or consent page, got ${response.status} at ${url}: ${html.slice(0, 300)}`);
    const csrf = csrfOf(html);
    let next: Response;
    if (html.includes(`/interaction/${uid}/login`)) {
      next = await postForm(`${o.issuer}/interaction/${uid}/login`, jar, { email: o.email, password: o.password, csrf });
    } else if (o.decision === 'deny') {
      next = await postForm(`${o.issuer}/interaction/${uid}/abort`, jar, { csrf });
    } else {
      next = await postForm(`${o.issuer}/interaction/${uid}/confirm`, jar, { csrf });
    }
    ({ response, location } = await followToApp(next, o.issuer, jar));
  }
  if (!location) throw new Error(`the flow did not return to the app (last status ${response.status})`);
  return { redirect: location, jar };
}

/** A token request; a field given as an array is repeated in a form, and stays an array in JSON. */
export async function tokenRequest(issuer: string, body: Record<string, string | string[]>, options: { json?: boolean; basic?: [string, string] } = {}) {
  const headers: Record<string, string> = {
    'content-type': options.json ? 'application/json' : 'application/x-www-form-urlencoded',
  };
  if (options.basic) headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(options.basic[0])}:${encodeURIComponent(options.basic[1])}`).toString('base64')}`;
  const res = await fetch(`${issuer}/oauth/token`, {
    method: 'POST',
    headers,
    body: options.json ? JSON.stringify(body) : new URLSearchParams(Object.entries(body).flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((each) => [k, each]))).toString(),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}
