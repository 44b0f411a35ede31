/**
 * The cost of a request at saturation: wrk (written in C) keeps one server at a time 95-100% busy,
 * where autocannon's own turnaround leaves it 80-88% busy on some machines, and the server's CPU
 * time per request, read from /proc, is what its throughput on one core comes down to.
 *
 *   npm run bench:saturate                                   cc-opaque, cc-jwt and introspection
 *   npm run bench:saturate -- --only introspection --rounds 6 --seconds 2
 *
 * For each row, the peer and Latchkey on SQLite take turns (in reverse order every other round);
 * the medians of the rounds after the first two (warm-up) are printed. Needs wrk and Linux; only
 * rows of one fixed request (no rotating token, no login) can be sent by wrk as they are.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { endpoints, type TargetId } from './endpoints.ts';
import { cpus, killAllNow, pinSelf, specFor, startServer, targetLabels, type RunningServer } from './targets.ts';

const { values: args } = parseArgs({
  options: {
    only: { type: 'string', default: 'cc-opaque,cc-jwt,introspection' },
    rounds: { type: 'string', default: '10' },
    seconds: { type: 'string', default: '3' },
  },
});
const WARM_ROUNDS = 2;
const TARGETS: readonly TargetId[] = ['peer', 'sqlite'];
const rounds = Number(args.rounds);
const seconds = Number(args.seconds);
if (!Number.isInteger(rounds) || rounds <= WARM_ROUNDS || !Number.isInteger(seconds) || seconds < 1) {
  process.stderr.write(`--rounds must be a whole number above ${WARM_ROUNDS} (the first ${WARM_ROUNDS} are warm-up) and --seconds a whole number of at least 1\n`);
  process.exit(2);
}

if (spawnSync('wrk', ['--version']).error) {
  process.stderr.write('wrk is not installed (Debian: apt-get install wrk)\n');
  process.exit(2);
}

const tmpDir = mkdtempSync(path.join(os.tmpdir(), 'latchkey-saturate-'));
process.once('exit', () => {
  killAllNow();
  rmSync(tmpDir, { recursive: true, force: true });
});

/** A Lua string literal (wrk's scripts are Lua). */
const lua = (text: string) => `"${text.replace(/[\\"]/g, (c) => `\\${c}`).replace(/\n/g, '\\n')}"`;

interface Turn {
  rps: number;
  cpuUsPerRequest: number;
}

function runWrk(server: RunningServer, url: string, script: string): Turn {
  const before = server.cpuMs();
  if (before === undefined) throw new Error('the servers\' CPU time is read from /proc: Linux only');
  const command = ['wrk', '-t1', '-c16', `-d${seconds}s`, '-s', script, url];
  const run = spawnSync(cpus ? 'taskset' : command[0]!, cpus ? ['-c', cpus.load, ...command] : command.slice(1), { encoding: 'utf8' });
  const cpuMs = server.cpuMs()! - before;
  const requests = Number(/(\d+) requests in/.exec(run.stdout)?.[1]);
  const failed = /Non-2xx or 3xx responses: (\d+)/.exec(run.stdout)?.[1] ?? /Socket errors: (.*)/.exec(run.stdout)?.[1];
  if (!requests || failed) throw new Error(`wrk at ${url}: ${failed ? `failures: ${failed}` : run.stdout + run.stderr}`);
  return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(run.stdout)![1]), cpuUsPerRequest: (cpuMs * 1000) / requests };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1]!;

async function main(): Promise<void> {
  pinSelf();
  const rows: string[][] = [['endpoint', 'target', 'req/s', 'CPU µs/request', 'x peer (req/s)', 'x peer (CPU)']];
  for (const id of args.only!.split(',')) {
    const endpoint = endpoints.find((e) => e.id === id);
    if (!endpoint) throw new Error(`unknown row ${id} (rows: ${endpoints.map((e) => e.id).join(', ')})`);
    if (endpoint.companionApi || !TARGETS.every((t) => endpoint.targets.includes(t))) throw new Error(`${id}: not served by both the peer and Latchkey's authorization server`);
    const servers = new Map<TargetId, { server: RunningServer; url: string; script: string }>();
    try {
      for (const target of TARGETS) {
        const server = await startServer(targetLabels[target], specFor(target, endpoint.mode, tmpDir, ''));
        const plan = await endpoint.prepare(server.fixtures);
        const [req] = plan.requests;
        if (plan.requests.length !== 1 || plan.rotating || plan.indivisible || req!.setupRequest) throw new Error(`${id}: not one fixed request, which wrk cannot send`);
        const script = path.join(tmpDir, `${id}-${target}.lua`);
        const headers = Object.entries(req!.headers ?? {}).map(([name, value]) => `wrk.headers[${lua(name)}] = ${lua(String(value))}\n`).join('');
        writeFileSync(script, `wrk.method = ${lua(req!.method ?? 'GET')}\n${req!.body ? `wrk.body = ${lua(String(req!.body))}\n` : ''}${headers}`);
        servers.set(target, { server, url: new URL(req!.path ?? '/', plan.origin).href, script });
      }
      const turns = new Map<TargetId, Turn[]>(TARGETS.map((t) => [t, []]));
      for (let round = 0; round < rounds; round += 1) {
        for (const target of round % 2 ? [...TARGETS].reverse() : TARGETS) {
          const { server, url, script } = servers.get(target)!;
          turns.get(target)!.push(runWrk(server, url, script));
        }
      }
      const measured = (t: TargetId, key: keyof Turn) => median(turns.get(t)!.slice(WARM_ROUNDS).map((turn) => turn[key]));
      for (const target of TARGETS) {
        const rps = measured(target, 'rps');
        const cpu = measured(target, 'cpuUsPerRequest');
        const vsPeer = target === 'peer' ? ['–', '–'] : [`${(rps / measured('peer', 'rps')).toFixed(2)}x`, `${(measured('peer', 'cpuUsPerRequest') / cpu).toFixed(2)}x`];
        rows.push([endpoint.label, targetLabels[target], rps.toFixed(0), cpu.toFixed(1), ...vsPeer]);
      }
      process.stderr.write(`${endpoint.label}: done\n`);
    } finally {
      await Promise.all([...servers.values()].map(({ server }) => server.stop()));
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const row of rows) process.stdout.write(`${row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ')}\n`);
  process.stdout.write(`\nmedians of rounds ${WARM_ROUNDS + 1}-${rounds}, ${seconds} s turns; "x peer (CPU)" is the peer's CPU time per request over Latchkey's\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`${err.message}\n`);
  process.exitCode = 1;
});
