import { execFile } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LoadPlan } from './load.ts';

const clientScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'paced-client.mjs');

export interface PacedResult {
  p50: number;
  p99: number;
  requests: number;
  failures: number;
  rps: number;
}

export const MAX_PACED_RATE = 20000;

const percentile = (sorted: Float64Array, p: number) =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

/**
 * Latency at a fixed request rate, requests spread evenly over time over keep-alive connections.
 * (autocannon's rate limit sends each second's quota as one burst, which measures full-load
 * latency for half of every second.) Latency runs from when the request was issued, so waiting
 * for a free connection counts and a late turn of the client's own loop does not.
 * A fixed request is sent by bench/paced-client.mjs, which speaks HTTP/1.1 on its sockets itself
 * and allocates almost nothing per request: against H it holds a p99 of 2-5 ms up to 12,000
 * requests a second here. Faster rates are not paced (MAX_PACED_RATE).
 * Single-request plans only; the authorization-code flow's sequence is not paced.
 */
export async function runPaced(plan: LoadPlan, options: { rate: number; seconds: number; connections: number }): Promise<PacedResult | undefined> {
  if (plan.requests.length !== 1 || options.rate > MAX_PACED_RATE) return undefined;
  await plan.beforeRun?.();
  const template = plan.requests[0]!;
  // A fixed request is paced from a lean process of its own; one that changes with every
  // response (rotating refresh tokens) needs the plan's code, so it is paced from here, with
  // Node's HTTP client (whose own collections can show in this row's p99 @½).
  if (!template.setupRequest && !template.onResponse) {
    const spec = { origin: plan.origin, method: template.method ?? 'GET', path: template.path ?? '/', headers: template.headers ?? {}, body: template.body, okStatuses: plan.expectStatus ? [plan.expectStatus] : undefined, ...options };
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, [clientScript, JSON.stringify(spec)], { timeout: (options.seconds + 30) * 1000 }, (err, out) => (err ? reject(err) : resolve(out)));
    });
    return JSON.parse(stdout) as PacedResult;
  }
  const origin = new URL(plan.origin);
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.connections });
  const ok = plan.ok ?? (plan.expectStatus ? (status: number) => status === plan.expectStatus : (status: number) => status >= 200 && status < 300);
  const total = Math.max(1, Math.round(options.rate * options.seconds));
  const latencies = new Float64Array(total);
  let done = 0;
  let failures = 0;
  const context: Record<string, unknown> = {};

  const send = () => new Promise<void>((resolve) => {
    const sentAt = performance.now();
    const req = template.setupRequest ? (template.setupRequest({ ...template }, context) ?? template) : template;
    const r = http.request({
      host: origin.hostname,
      port: origin.port,
      method: req.method ?? 'GET',
      path: req.path ?? '/',
      headers: { ...req.headers, ...(req.body ? { 'content-length': String(Buffer.byteLength(req.body)) } : {}) },
      agent,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        latencies[done++] = performance.now() - sentAt;
        const status = res.statusCode ?? 0;
        if (!ok(status)) failures += 1;
        template.onResponse?.(status, Buffer.concat(chunks).toString('utf8'), context, res.headers as Record<string, string | string[]>);
        resolve();
      });
    });
    r.on('error', () => {
      latencies[done++] = performance.now() - sentAt;
      failures += 1;
      resolve();
    });
    r.end(req.body);
  });

  const started = performance.now();
  const interval = 1000 / options.rate;
  const inFlight: Promise<void>[] = [];
  let sent = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (sent < total && started + sent * interval <= now) {
        inFlight.push(send());
        sent += 1;
      }
      // Polls on every turn of the event loop: the load generator's core has nothing else to do.
      if (sent < total) setImmediate(tick);
      else resolve();
    };
    tick();
  });
  await Promise.all(inFlight);
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  const sorted = latencies.subarray(0, done).sort();
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), requests: done, failures, rps: done / seconds };
}
