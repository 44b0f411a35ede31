import type { Context } from 'koa';

const JSON_TYPE = 'application/json; charset=utf-8';

/**
 * Answers with `status` and `body` as JSON, plus `headers` (name, value, name, value ...), in one
 * writeHead and one end instead of through Koa's response setters: for an API answering from a
 * credential cache those setters cost more than the verification itself (see the companion API
 * rows in bench/results.md). Headers a handler set with ctx.set are kept.
 */
export function sendJson(ctx: Context, status: number, body: unknown, headers: string[]): void {
  // 204, 205 and 304 carry no body, and neither does a handler that returned none.
  const json = body === undefined || status === 204 || status === 205 || status === 304 ? undefined : JSON.stringify(body);
  if (!ctx.writable) return;
  if (json === undefined) {
    ctx.res.writeHead(status, headers);
    ctx.res.end();
    return;
  }
  headers.push('Content-Type', JSON_TYPE, 'Content-Length', String(Buffer.byteLength(json)));
  ctx.res.writeHead(status, headers);
  // HEAD: the headers of the GET answer, without its body.
  ctx.res.end(ctx.method === 'HEAD' ? undefined : json);
}
