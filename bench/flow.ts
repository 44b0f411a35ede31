import { createHash, randomBytes } from 'node:crypto';
import type { ServerFixtures } from './protocol.ts';
import { shared } from './protocol.ts';

/** One HTTP request of a flow, relative to the server's origin. */
export interface FlowRequest {
  method: 'GET' | 'POST';
  path: string;
  headers: Record<string, string>;
  body?: string;
}

/**
 * A browser without JavaScript going through the authorization-code flow: authorize, login page,
 * login, consent page, consent, back to the app, then the app redeeming the code. A fresh flow
 * has no cookies, so every flow makes a new session.
 */
export class AuthorizationCodeFlow {
  readonly #fx: ServerFixtures;
  readonly #user: { email: string; password: string };
  readonly #cookies = new Map<string, string>();
  readonly #verifier = randomBytes(32).toString('base64url');
  next: FlowRequest | undefined;
  tokens: Record<string, unknown> | undefined;
  error: string | undefined;

  /** `user`: who logs in (by default the fixtures' user). */
  constructor(fixtures: ServerFixtures, user = fixtures.user!) {
    this.#fx = fixtures;
    this.#user = user;
    const web = fixtures.clients!.web;
    const params = new URLSearchParams({
      client_id: web.clientId,
      redirect_uri: web.redirectUri,
      response_type: 'code',
      scope: shared.webScope,
      // Both servers keep offline_access (and so issue a refresh token) only when consent is asked.
      prompt: 'consent',
      state: randomBytes(8).toString('hex'),
      code_challenge: createHash('sha256').update(this.#verifier).digest('base64url'),
      code_challenge_method: 'S256',
    });
    this.next = this.#get(`/oauth/authorize?${params}`);
  }

  /** Feeds a response in; afterwards `next` is the following request, or undefined when done or failed. */
  advance(status: number, rawHeaders: Record<string, string | string[] | undefined>, body: string): void {
    this.next = undefined;
    // autocannon hands over header names as the server spelled them.
    const headers = Object.fromEntries(Object.entries(rawHeaders).map(([k, v]) => [k.toLowerCase(), v]));
    const setCookie = headers['set-cookie'];
    for (const line of [setCookie ?? []].flat()) {
      const [pair] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(line)) this.#cookies.delete(name);
      else this.#cookies.set(name, value);
    }
    const web = this.#fx.clients!.web;
    if (status >= 300 && status < 400) {
      const location = String(headers.location ?? '');
      const target = new URL(location, this.#fx.url);
      if (location.startsWith(web.redirectUri)) {
        const code = target.searchParams.get('code');
        if (!code) return this.#fail(`no code at the redirect: ${location}`);
        this.next = {
          method: 'POST',
          path: '/oauth/token',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            authorization: `Basic ${Buffer.from(`${encodeURIComponent(web.clientId)}:${encodeURIComponent(web.clientSecret)}`).toString('base64')}`,
          },
          body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: web.redirectUri, code_verifier: this.#verifier }).toString(),
        };
        return undefined;
      }
      this.next = this.#get(`${target.pathname}${target.search}`);
      return undefined;
    }
    if (status === 200 && body.startsWith('{')) {
      this.tokens = JSON.parse(body) as Record<string, unknown>;
      return undefined;
    }
    const form = /action="(\/interaction\/[^/"]+\/(login|confirm))"/.exec(body);
    const csrf = /name="csrf" value="([^"]+)"/.exec(body)?.[1];
    if (status !== 200 || !form || !csrf) return this.#fail(`unexpected ${status}: ${body.slice(0, 200)}`);
    const fields: Record<string, string> = form[2] === 'login'
      ? { email: this.#user.email, password: this.#user.password, csrf }
      : { csrf };
    this.next = {
      method: 'POST',
      path: form[1]!,
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: this.#cookieHeader() },
      body: new URLSearchParams(fields).toString(),
    };
    return undefined;
  }

  #get(path: string): FlowRequest {
    return { method: 'GET', path, headers: { cookie: this.#cookieHeader() } };
  }

  #cookieHeader(): string {
    return [...this.#cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  #fail(why: string): void {
    this.error = why;
  }
}

/** Runs one whole flow with fetch (to seed refresh tokens); returns the token response. */
export async function completeFlow(fixtures: ServerFixtures, user?: { email: string; password: string }): Promise<Record<string, unknown>> {
  const flow = new AuthorizationCodeFlow(fixtures, user);
  for (let step = 0; step < 12 && flow.next; step += 1) {
    const req = flow.next;
    const res = await fetch(new URL(req.path, fixtures.url), { method: req.method, headers: req.headers, body: req.body, redirect: 'manual' });
    const headers: Record<string, string | string[]> = Object.fromEntries(res.headers);
    headers['set-cookie'] = res.headers.getSetCookie();
    flow.advance(res.status, headers, await res.text());
  }
  if (!flow.tokens) throw new Error(`authorization-code flow failed at ${fixtures.url}: ${flow.error ?? 'too many steps'}`);
  return flow.tokens;
}
