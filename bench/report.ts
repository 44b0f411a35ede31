import os from 'node:os';
import type { TargetId } from './endpoints.ts';
import { MAX_PACED_RATE } from './paced.ts';

export interface Row {
  endpoint: string;
  label: string;
  target: TargetId;
  targetLabel: string;
  rps: number;
  /** req/s of each measured turn, one a round in the order the rounds ran. */
  turnRps?: number[];
  p50: number;
  p99: number;
  /** p99 at half of this row's maximum throughput (rate-limited run). */
  p99Half?: number;
  /** Why that run failed, when it did (the server stopped answering): the p99 goal is not met. */
  pacedFailed?: string;
  /** Requests of that run answered with an error or not at all (its p99 then includes them). */
  pacedFailures?: number;
  /** The CPU time the hypervisor took from this machine during the p99 @½ run, in percent. */
  stealHalf?: number;
  peakRssMb?: number;
  failures: number;
  requests: number;
  note?: string;
  /** H's req/s in the same rounds as this row (see measureTogether in run.ts). */
  hRps?: number;
  vsH?: number;
  vsPeer?: number;
  /** The ratio to the peer in each round alone: how far one turn moved the row's ratio. */
  vsPeerByRound?: number[];
}

export interface Goal {
  goal: string;
  value: string;
  met: boolean | undefined;
}

export interface Report {
  startedAt: string;
  seconds: number;
  machine: { cpus: number; model: string; node: string; pinned: string };
  settings: { connections: number; seconds: number; warmupSeconds: number; rounds: number; unmeasuredRounds: number; moreUnmeasuredRounds: number; stillWarmingRatio: number; moreWarmupWithinSeconds: number; sequenceLeadSeconds: number; halfLoadSeconds: number; redoTurnOthersMsPerSecond: number; redoneTurnsPerRow: number; rerunsWithinSeconds: number; rerunBudgetSeconds: number; settleSeconds: number; tool: string };
  /** The CPU time the hypervisor took from this machine during the whole run, in percent. */
  steal?: number;
  rows: Row[];
  rssAfterRunMb: Record<string, number>;
  goals: Goal[];
  definitions: Record<string, string>;
  skipped: string[];
  /** Disturbed turns and paced runs kept as they were because the run was near its 10 minutes. */
  rerunsSkipped: number;
}

const fixed = (n: number | undefined, digits = 0) => (n === undefined || Number.isNaN(n) ? '–' : n.toFixed(digits));
const ms = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? '–' : n < 10 ? n.toFixed(2) : n.toFixed(1));
const ratio = (n: number | undefined) => (n === undefined ? '–' : `${n.toFixed(2)}x`);

/** Fills in the ratios to H and to the peer from the same run. */
export function addRatios(rows: Row[]): void {
  for (const row of rows) {
    if (row.target === 'H') continue;
    if (row.hRps) row.vsH = row.rps / row.hRps;
    const peer = rows.find((r) => r.endpoint === row.endpoint && r.target === 'peer');
    if (!peer || row.target === 'peer') continue;
    row.vsPeer = row.rps / peer.rps;
    const mine = row.turnRps;
    const theirs = peer.turnRps;
    // The same rounds, side by side (the flow row's one turn has no rounds to compare).
    if (mine && theirs && mine.length === theirs.length && mine.length > 1) row.vsPeerByRound = mine.map((rps, i) => rps / theirs[i]!);
  }
}

export function evaluateGoals(rows: Row[], rssAfter: Record<string, number>): Goal[] {
  const row = (endpoint: string, target: TargetId) => rows.find((r) => r.endpoint === endpoint && r.target === target);
  const atLeast = (goal: string, r: Row | undefined, key: 'vsPeer' | 'vsH', min: number): Goal => {
    const v = r?.[key];
    return { goal, value: v === undefined ? 'not measured' : `${v.toFixed(3)}x`, met: v === undefined ? undefined : v >= min };
  };
  const latchkey = rows.filter((r) => r.target === 'sqlite' || r.target === 'postgres');
  const p99s = latchkey.filter((r) => r.p99Half !== undefined);
  const worst = p99s.reduce<Row | undefined>((w, r) => (!w || r.p99Half! > w.p99Half! ? r : w), undefined);
  const slow = [...p99s.filter((r) => r.p99Half! >= 10), ...latchkey.filter((r) => r.pacedFailed)];
  // The in-memory peer's paced rows in the same run, for scale: what the machine allowed a server
  // with no store at all. A row whose paced requests failed is left out: its p99 is partly refusals
  // (the peer's refresh row, whose in-memory store drops grants: see its notes).
  const peer = rows.filter((r) => r.target === 'peer' && r.p99Half !== undefined && !r.pacedFailures);
  const peerOver = peer.filter((r) => r.p99Half! >= 10);
  const peerContext = peer.length
    ? `; the in-memory peer, same run: ${peerOver.length} of ${peer.length} row${peer.length === 1 ? '' : 's'} over${peerOver.length ? ` (${peerOver.map((r) => `${r.label} ${ms(r.p99Half)} ms`).join(', ')})` : ''}`
    : '';
  const rssEntries = Object.entries(rssAfter).filter(([name]) => name.startsWith('Latchkey'));
  const biggest = rssEntries.reduce<[string, number] | undefined>((b, e) => (!b || e[1] > b[1] ? e : b), undefined);
  return [
    atLeast('token endpoint, opaque, SQLite >= 1.0x peer', row('cc-opaque', 'sqlite'), 'vsPeer', 1),
    atLeast('token endpoint, JWT ES256, SQLite >= 1.0x peer', row('cc-jwt', 'sqlite'), 'vsPeer', 1),
    atLeast('introspection, SQLite >= 1.0x peer', row('introspection', 'sqlite'), 'vsPeer', 1),
    atLeast('discovery, SQLite >= 0.5 H', row('discovery', 'sqlite'), 'vsH', 0.5),
    atLeast('JWKS, SQLite >= 0.5 H', row('jwks', 'sqlite'), 'vsH', 0.5),
    // The companion API's goals (resource-server and API-key issues), against the same bare Koa.
    atLeast('API verify, JWT cached >= 0.7 H', row('api-jwt-cached', 'sqlite'), 'vsH', 0.7),
    atLeast('API verify, opaque cached >= 0.7 H', row('api-opaque-cached', 'sqlite'), 'vsH', 0.7),
    atLeast('API key, cache hit >= 0.7 H', row('api-key-hit', 'sqlite'), 'vsH', 0.7),
    atLeast('API key, cache miss >= 0.3 H', row('api-key-miss', 'sqlite'), 'vsH', 0.3),
    atLeast('API key, bad checksum >= 0.8 H', row('api-key-bad-checksum', 'sqlite'), 'vsH', 0.8),
    {
      goal: 'p99 < 10 ms at half of maximum throughput (every Latchkey row)',
      value: worst
        ? `worst ${ms(worst.p99Half)} ms (${worst.label}, ${worst.targetLabel})${slow.length ? `; over: ${slow.map((r) => `${r.label} on ${r.targetLabel}${r.pacedFailed ? ' (paced run failed)' : ''}`).join(', ')}` : ''}${peerContext}`
        : slow.length ? `paced run failed: ${slow.map((r) => `${r.label} on ${r.targetLabel}`).join(', ')}` : 'not measured',
      met: worst || slow.length ? slow.length === 0 : undefined,
    },
    {
      goal: 'server RSS < 150 MB after the run (every Latchkey process)',
      value: biggest ? `largest ${biggest[1].toFixed(0)} MB (${biggest[0]})` : 'not measured',
      met: biggest ? biggest[1] < 150 : undefined,
    },
  ];
}

const HEADER = ['endpoint', 'target', 'req/s', 'p50 ms', 'p99 ms', 'p99 @½ ms', 'steal @½', 'peak RSS MB', 'x H', 'x peer', 'x peer by round', 'failed', 'notes'];
/** The columns from req/s to failed hold numbers: right-aligned in both tables. */
const NUMERIC_COLUMNS = new Set(HEADER.map((_, i) => i).filter((i) => i >= HEADER.indexOf('req/s') && i <= HEADER.indexOf('failed')));
const range = (values: number[] | undefined) => (values ? `${Math.min(...values).toFixed(2)}-${Math.max(...values).toFixed(2)}` : '–');
const percent = (n: number | undefined) => (n === undefined ? '–' : `${n.toFixed(0)}%`);

function cells(r: Row): string[] {
  return [
    r.label, r.targetLabel, fixed(r.rps), ms(r.p50), ms(r.p99), r.pacedFailed ? 'failed' : ms(r.p99Half), percent(r.stealHalf), fixed(r.peakRssMb),
    ratio(r.vsH), ratio(r.vsPeer), range(r.vsPeerByRound), r.failures ? `${r.failures}/${r.requests}` : '0', r.note ?? '',
  ];
}

export function textTable(rows: Row[]): string {
  const all = [HEADER, ...rows.map(cells)];
  const widths = HEADER.map((_, i) => Math.max(...all.map((c) => c[i]!.length)));
  return all
    .map((c, line) => c.map((v, i) => (NUMERIC_COLUMNS.has(i) && line > 0 ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join('  ').trimEnd())
    .join('\n');
}

export function markdown(report: Report): string {
  const table = [
    `| ${HEADER.join(' | ')} |`,
    `|${HEADER.map((_, i) => (NUMERIC_COLUMNS.has(i) ? '---:' : '---')).join('|')}|`,
    ...report.rows.map((r) => `| ${cells(r).join(' | ')} |`),
  ].join('\n');
  const goals = report.goals.map((g) => `| ${g.goal} | ${g.value} | ${g.met === undefined ? 'not measured' : g.met ? 'met' : '**not met**'} |`).join('\n');
  const rss = Object.entries(report.rssAfterRunMb).map(([name, mb]) => `| ${name} | ${mb.toFixed(0)} |`).join('\n');
  const defs = Object.entries(report.definitions).map(([label, d]) => `- **${label}**: ${d}`).join('\n');
  const { machine: m, settings: s } = report;
  return `# Latchkey benchmark results

Run ${report.startedAt}, ${report.seconds.toFixed(0)} s in all, on ${m.cpus} × ${m.model}, Node ${m.node}; ${m.pinned}${report.steal === undefined ? '' : `; the hypervisor took ${report.steal.toFixed(1)}% of this machine's CPU time during the run (steal)`}.
Load: ${s.tool}, ${s.connections} keep-alive connections, no pipelining, ${s.warmupSeconds} s warm-up then ${s.seconds} s per row,
in ${s.rounds} rounds in which the endpoint's targets and H take turns (${s.seconds / s.rounds} s each, in reverse order every other round), after ${s.unmeasuredRounds} unmeasured round${s.unmeasuredRounds === 1 ? '' : 's'} of the same turns (${s.moreUnmeasuredRounds} more, in a row begun within ${s.moreWarmupWithinSeconds} s of the start, when a target's last one ran over ${s.stillWarmingRatio}x as fast as its turn before);
"p99 @½" is a second run of ${s.halfLoadSeconds} s with requests paced evenly at half of the row's req/s (autocannon's own rate limit sends
each second's quota in one burst), sent by a small process of its own that speaks HTTP/1.1 on its sockets itself; the authorization-code flow and rows faster than ${2 * MAX_PACED_RATE} req/s are not paced.
The authorization-code flow runs in one turn a target, after ${s.sequenceLeadSeconds} s in the same turn that are not measured, each turn once the servers are idle.
Generated by \`npm run bench\`; ratios compare numbers measured in the same rounds (x H: to bare Koa; x peer: to oidc-provider with its in-memory adapter).
${report.skipped.length ? `\nSkipped: ${report.skipped.join('; ')}.\n` : ''}${report.rerunsSkipped ? `\n${report.rerunsSkipped} disturbed turns or paced runs were kept without a rerun: the run was past ${report.settings.rerunsWithinSeconds} s of its 10 minutes, or the measurements it had thrown away took ${report.settings.rerunBudgetSeconds} s already.\n` : ''}
${table}

## Goals

| goal | this run | |
|---|---|---|
${goals}

## Server memory after the run

Resident set size of each server process ${s.settleSeconds} s after the last row, in MiB.

| process | RSS MB |
|---|---:|
${rss}

## What the rows mean

- Every server runs in its own process, pinned to one core; the load generator runs on the other.
- Latchkey's authorization server and its companion API run as two processes sharing one database, as \`latchkey api\` runs beside the authorization server, both with LOG_LEVEL=warn; the peer writes no logs either. The API rows' peak RSS is the API process's.
- "x peer by round" is the lowest and highest ratio to the peer over the rounds, each target's turn against the peer's turn of the same round: how far a single turn moved the row's ratio. Every turn's req/s is in results.json (\`turnRps\`).
- Latency is measured per response by the load generator (every status, sub-millisecond); "failed" counts responses with an unexpected status, errors and timeouts.
- Peak RSS is the server process's high-water mark during that row's turns (Linux clear_refs), in
  MiB. The authorization-code flow hashes passwords with scrypt (32 MiB each, several at once on
  libuv's threads), which is why its rows peak highest; each hash's memory is its own mapping,
  returned when the hash ends, so it does not stay in the memory after the run.
- p99 @½ is timed by a separate small process (bench/paced-client.mjs; below 4,000 requests a second, and at any rate on PostgreSQL's rows that query the database (all but discovery and JWKS), it sleeps between sends rather than keep busy the core it shares with PostgreSQL), while the other targets' servers are stopped (SIGSTOP) so that their timers and garbage collections do not take the measured server's core; so is the authorization server during the API rows that the companion API answers without it (JWTs, API keys), and the companion API during the authorization server's own rows. A row's notes say when the measured server made a full garbage collection (and whether V8's memory reducer made it: when the process looks idle, and, whatever the load, 100 s after the last one), or paused 5 ms or more for one, during its paced run. "steal @½" is the share of
  the machine's CPU time the hypervisor gave to other guests during that run (/proc/stat): while
  the virtual CPUs are taken away, every process stalls, and one stall of tens of milliseconds
  decides the p99 of a 3 s run. On a quiet host even H shows 1-3 ms there. A row's notes give the
  time the servers' core itself was taken away during its paced run, when it was 10 ms or more.
${defs}
`;
}

export function machine(pinned: string) {
  return { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? 'unknown CPU', node: process.version, pinned };
}
