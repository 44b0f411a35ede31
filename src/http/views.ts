import { randomBytes } from 'node:crypto';
import path from 'node:path';
import ejs from 'ejs';
import type { Context, Next } from 'koa';
import { projectRoot } from '../config.ts';

const viewsDir = path.join(projectRoot, 'views');

/**
 * Headers every page a person sees gets: never framed (clickjacking on consent), no referrer
 * leaking codes or interaction ids, and nothing loaded from anywhere but the inline styles we sign.
 */
export function setPageSecurityHeaders(ctx: Context, nonce: string): void {
  ctx.set('X-Frame-Options', 'DENY');
  ctx.set('Referrer-Policy', 'no-referrer');
  ctx.set('X-Content-Type-Options', 'nosniff');
  ctx.set(
    'Content-Security-Policy',
    `default-src 'none'; style-src 'nonce-${nonce}'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'`,
  );
  ctx.set('Cache-Control', 'no-store');
}

export async function renderPage(ctx: Context, view: string, data: Record<string, unknown>, status = 200): Promise<void> {
  const nonce = randomBytes(16).toString('base64');
  const html = await ejs.renderFile(path.join(viewsDir, `${view}.ejs`), { ...data, nonce }, { cache: true });
  setPageSecurityHeaders(ctx, nonce);
  ctx.status = status;
  ctx.type = 'html';
  ctx.body = html;
}

/**
 * Pages oidc-provider renders itself (the auto-submitting logout form when nobody is signed in,
 * form_post responses) get the same framing and referrer protection as ours. Its own CSP, which
 * carries the hash of its inline script, is kept and only gains frame-ancestors.
 */
export async function protectLibraryPages(ctx: Context, next: Next): Promise<void> {
  await next();
  if (!ctx.response.is('html') || ctx.response.get('X-Frame-Options')) return;
  ctx.set('X-Frame-Options', 'DENY');
  ctx.set('Referrer-Policy', 'no-referrer');
  ctx.set('X-Content-Type-Options', 'nosniff');
  const csp = ctx.response.get('Content-Security-Policy');
  if (!/frame-ancestors/.test(csp)) ctx.set('Content-Security-Policy', csp ? `${csp}; frame-ancestors 'none'` : "frame-ancestors 'none'");
}
