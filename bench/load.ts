import autocannon, { type Request } from 'autocannon';

/** What to send: one request repeated, or a sequence each connection walks through again and again. */
export interface LoadPlan {
  /** The server's origin, e.g. http://127.0.0.1:3000. */
  origin: string;
  requests: Request[];
  /** Which statuses count as a success (default: 2xx). Anything else is counted as a failure. */
  ok?: (status: number) => boolean;
  /** The one status every answer should have (a credential the server must refuse: 401). */
  expectStatus?: number;
  /** Called before every run (warm-up included), e.g. to top up a pool of single-use tokens. */
  beforeRun?: () => Promise<void>;
  /** Extra numbers for the notes column, over the `seconds` measured since `resetSummary`. */
  summary?: (seconds: number) => string | undefined;
  /** Called before the measured runs begin (after warming up): what `summary` counts starts here. */
  resetSummary?: () => void;
  /**
   * The one request's body ends with a single-use token that each answer replaces (a rotating
   * refresh token): `bodyBefore` + the token, found in the answer's JSON as `field`. `take` hands
   * over the unused tokens on hand, for the paced client to start its connections with.
   */
  rotating?: { bodyBefore: string; field: string; take(): string[] };
  /** Its requests form sequences a turn's end would cut off (a whole login): measured in one turn. */
  indivisible?: boolean;
}

export interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  failures: number;
  seconds: number;
  /** Every response's latency in ms, sorted. */
  latencies: Float64Array;
}

export interface LoadSettings {
  connections: number;
  seconds: number;
  /** Requests per second for the whole run; unset: as fast as the server answers. */
  rate?: number;
  /**
   * Seconds run first in the same run and not measured: the connections and the sequences they
   * are in the middle of carry on into the measured `seconds` (`resetSummary` is called between).
   */
  leadSeconds?: number;
}

const percentile = (sorted: Float64Array, p: number) =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

/**
 * Runs autocannon (keep-alive, no pipelining) and measures every response itself, so redirects
 * (the authorization-code flow) count, and latency keeps sub-millisecond resolution.
 */
export async function runLoad(plan: LoadPlan, settings: LoadSettings): Promise<LoadResult> {
  await plan.beforeRun?.();
  const ok = plan.ok ?? (plan.expectStatus ? (status: number) => status === plan.expectStatus : (status: number) => status >= 200 && status < 300);
  let latencies = new Float64Array(1 << 16);
  let count = 0;
  let failures = 0;
  const lead = settings.leadSeconds ?? 0;
  let measuring = lead === 0;
  const leadTimer = measuring ? undefined : setTimeout(() => {
    measuring = true;
    plan.resetSummary?.();
  }, lead * 1000);
  const instance = autocannon({
    url: plan.origin,
    connections: settings.connections,
    pipelining: 1,
    duration: lead + settings.seconds,
    timeout: 10,
    ...(settings.rate ? { overallRate: Math.max(1, Math.round(settings.rate)) } : {}),
    requests: plan.requests,
  });
  instance.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
    if (!measuring) return;
    if (count === latencies.length) {
      const bigger = new Float64Array(latencies.length * 2);
      bigger.set(latencies);
      latencies = bigger;
    }
    latencies[count++] = ms;
    if (!ok(status)) failures += 1;
  });
  // Errors and timeouts alike (autocannon reports a timeout as a reqError too).
  instance.on('reqError', () => {
    if (measuring) failures += 1;
  });
  const result = await instance;
  clearTimeout(leadTimer);
  const sorted = latencies.subarray(0, count).sort();
  const seconds = result.duration - lead;
  return summarise(sorted, failures, seconds);
}

function summarise(sorted: Float64Array, failures: number, seconds: number): LoadResult {
  return { rps: sorted.length / seconds, p50: percentile(sorted, 50), p99: percentile(sorted, 99), requests: sorted.length, failures, seconds, latencies: sorted };
}

/** Several runs against one server as one: every response counted, latencies pooled. */
export function combine(runs: readonly LoadResult[]): LoadResult {
  const pooled = new Float64Array(runs.reduce((n, r) => n + r.latencies.length, 0));
  let at = 0;
  for (const r of runs) {
    pooled.set(r.latencies, at);
    at += r.latencies.length;
  }
  return summarise(pooled.sort(), runs.reduce((n, r) => n + r.failures, 0), runs.reduce((n, r) => n + r.seconds, 0));
}
