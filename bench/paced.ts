import { execFile } from 'node:child_process';
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
  /** The client's own longest pause between two turns of its loop during the run, in ms. */
  longestPause: number;
  /** The longest time in which requests were in flight and the server answered none, in ms. */
  longestSilence: number;
  /** The longest a due request waited for a free connection (all busy at the server), in ms. */
  longestWait: number;
}

export const MAX_PACED_RATE = 40000;

/**
 * Latency at a fixed request rate, requests spread evenly over time over keep-alive connections.
 * (autocannon's rate limit sends each second's quota as one burst, which measures full-load
 * latency for half of every second.) Latency runs from when the request was issued, so waiting
 * for a free connection counts and a late turn of the client's own loop does not.
 * Requests are sent by bench/paced-client.mjs, which speaks HTTP/1.1 on its sockets itself
 * and allocates almost nothing per request: against H it held a p99 of 2-5 ms up to 12,000
 * requests a second on a slow day here, and 1.4-1.7 ms at 34,000 on a fast one. Faster rates are
 * not paced (MAX_PACED_RATE).
 * Single-request plans only, fixed or `rotating`; the authorization-code flow's sequence is not paced.
 */
export async function runPaced(plan: LoadPlan, options: { rate: number; seconds: number; connections: number; sharesCore: boolean }): Promise<PacedResult | undefined> {
  const [template, ...more] = plan.requests;
  if (!template || more.length > 0 || options.rate > MAX_PACED_RATE) return undefined;
  // The client sends one fixed request, or one whose body carries the token the last answer gave.
  if ((template.setupRequest || template.onResponse) && !plan.rotating) return undefined;
  await plan.beforeRun?.();
  const rotate = plan.rotating && { bodyBefore: plan.rotating.bodyBefore, field: plan.rotating.field, seeds: plan.rotating.take() };
  const spec = { origin: plan.origin, method: template.method ?? 'GET', path: template.path ?? '/', headers: template.headers ?? {}, body: template.body, okStatuses: plan.expectStatus ? [plan.expectStatus] : undefined, rotate, ...options };
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [clientScript, JSON.stringify(spec)], { timeout: (options.seconds + 30) * 1000 }, (err, out, errOut) => {
      if (!err) return resolve(out);
      let stalled: string | undefined;
      try {
        stalled = (JSON.parse(out) as { stalled?: string }).stalled;
      } catch {
        // Nothing, or not its answer: stderr or the exit says why.
      }
      const said = stalled || errOut.trim() || (err.killed ? `killed after ${options.seconds + 30} s` : err.message);
      reject(new Error(`paced run at ${options.rate.toFixed(0)} requests a second failed: ${said}`));
    });
  });
  return JSON.parse(stdout) as PacedResult;
}
