import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TargetId } from './endpoints.ts';
import { ASK_COLLECTIONS, COLLECTIONS, READY, type Collections, type ServerFixtures, type ServerSpec, type TokenMode } from './protocol.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const targetLabels: Record<TargetId, string> = {
  H: 'H (bare Koa)',
  peer: 'peer (oidc-provider, memory)',
  sqlite: 'Latchkey SQLite',
  postgres: 'Latchkey PostgreSQL',
};

export function specFor(target: TargetId, mode: TokenMode, tmpDir: string, postgresUrl: string): ServerSpec {
  switch (target) {
    case 'H': return { kind: 'koa', mode, tmpDir };
    case 'peer': return { kind: 'peer', mode, tmpDir };
    case 'sqlite': return { kind: 'latchkey', mode, database: 'sqlite', tmpDir };
    case 'postgres': return { kind: 'latchkey', mode, database: 'postgres', tmpDir, postgresUrl };
  }
}

/** CPU placement: servers on one core, the load generator (this process) on another. */
export const cpus = (() => {
  const count = os.availableParallelism();
  const taskset = spawnSync('taskset', ['--version'], { stdio: 'ignore' }).status === 0;
  if (!taskset || count < 2) return undefined;
  return { server: '0', load: String(count - 1) };
})();

/** Pins this process (all its threads) to the load generator's core. */
export function pinSelf(): void {
  if (cpus) spawnSync('taskset', ['-a', '-p', '-c', cpus.load, String(process.pid)], { stdio: 'ignore' });
}

/**
 * The scheduling priority (nice) of the benchmark's own processes: this one (the throughput load
 * generator), and, inheriting it, the servers and the paced client it starts, and a local
 * PostgreSQL server (pinLocalPostgres). The machine's other services (here RabbitMQ, MariaDB, NATS,
 * the VM's agent) stay at their own, so that when one of them wakes up for a few milliseconds it
 * does not take a server's core away for its whole time slice: every target alike, as if each had a
 * host of its own. Lowering the nice value needs root (CAP_SYS_NICE); without it nothing changes.
 */
export const BENCH_NICE = -10;

/** Sets a process's nice value (pid 0: this one); false where that is not allowed, or it is gone. */
function renice(pid: number, value: number): boolean {
  try {
    os.setPriority(pid, value);
    return true;
  } catch {
    return false;
  }
}

/** Raises this process to BENCH_NICE (its children inherit it); false where that is not allowed. */
export const raisePriority = (): boolean => renice(0, BENCH_NICE);

/** The processes of a PostgreSQL server running on this machine (postmaster and backends). */
const postgresPids = (): string[] => spawnSync('pgrep', ['-x', 'postgres'], { encoding: 'utf8' }).stdout?.trim().split('\n').filter(Boolean) ?? [];

/**
 * Moves a PostgreSQL server running on this machine (its postmaster and every backend, present and
 * future: backends inherit the postmaster's CPUs) onto the load generator's core while the
 * benchmark runs, as if it ran on a host of its own: left where the scheduler puts it, its
 * backends took turns on the servers' core, and a request's latency then included another
 * process's work. Returns what to say about it and how to put it back; nothing happens where the
 * processes cannot be found or moved (another user's server, a container).
 */
export function pinLocalPostgres(url: string): { placement: string; restore(): void } | undefined {
  const host = new URL(url).hostname;
  if (!cpus || !['127.0.0.1', 'localhost', '::1', '[::1]', ''].includes(host)) return undefined;
  const pids = postgresPids();
  if (pids.length === 0) return undefined;
  const mask = /affinity list: (\S+)/.exec(spawnSync('taskset', ['-c', '-p', pids[0]!], { encoding: 'utf8' }).stdout ?? '')?.[1];
  const move = (list: string) => pids.every((pid) => spawnSync('taskset', ['-a', '-c', '-p', list, pid], { stdio: 'ignore' }).status === 0);
  if (!mask || !move(cpus.load)) {
    if (mask) move(mask);
    return undefined;
  }
  // Its priority too, as the benchmark's own (its backends, started by the postmaster, inherit it).
  const nice = os.getPriority(Number(pids[0]));
  const raised = pids.map((pid) => renice(Number(pid), BENCH_NICE)).every(Boolean);
  return {
    placement: `the local PostgreSQL server to CPU ${cpus.load} beside the load generator${raised ? ` at the benchmark's priority` : ''}`,
    restore() {
      // Its processes now, including the backends started during the run.
      for (const pid of postgresPids()) {
        spawnSync('taskset', ['-a', '-c', '-p', mask, pid], { stdio: 'ignore' });
        renice(Number(pid), nice);
      }
    },
  };
}

export interface RunningServer {
  name: string;
  pid: number;
  fixtures: ServerFixtures;
  /** Forgets the peak resident set size so far (Linux), so the next reading is this row's peak. */
  resetPeakRss(): void;
  /** Peak and current resident set size in MiB (Linux /proc), undefined elsewhere. */
  rss(): { peak: number; current: number } | undefined;
  /** CPU time used so far (all threads) in ms (Linux /proc), undefined elsewhere. */
  cpuMs(): number | undefined;
  /** The garbage collections of its main thread since the last call (undefined: no answer in 2 s). */
  collections(): Promise<Collections | undefined>;
  /**
   * Stops the process (SIGSTOP) while another target's latency is measured, and lets it go on
   * (SIGCONT): see measureHalfLoad in run.ts. Never in the middle of a SQLite transaction or
   * checkpoint (heldSqliteLocks).
   */
  pause(): Promise<void>;
  resume(): void;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();

/** Kills whatever server is still running: for exit paths that cannot wait. */
export function killAllNow(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
}

export async function startServer(name: string, spec: ServerSpec): Promise<RunningServer> {
  // BENCH_CPU_PROF=dir writes a V8 CPU profile of every server into dir (open it in Chrome DevTools).
  const profile = process.env.BENCH_CPU_PROF ? [`--cpu-prof`, `--cpu-prof-dir=${path.resolve(process.env.BENCH_CPU_PROF)}`] : [];
  // BENCH_NODE_FLAGS='--flag ...' runs every server (each target alike) with these Node options.
  const flags = process.env.BENCH_NODE_FLAGS?.split(/\s+/).filter(Boolean) ?? [];
  const node = [process.execPath, ...profile, ...flags, path.join(root, 'bin', 'run-ts.mjs'), path.join(root, 'bench', 'server.ts'), JSON.stringify(spec)];
  const [command, ...args] = cpus ? ['taskset', '-c', cpus.server, ...node] : node;
  const child = spawn(command!, args, { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] });
  live.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => {
    live.delete(child);
    resolve();
  }));
  const stderr: string[] = [];
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr.push(chunk);
    if (stderr.length > 50) stderr.shift();
  });

  // Answers to ASK_COLLECTIONS, in the order they were asked.
  const answers: ((collections: Collections) => void)[] = [];
  const fixtures = await new Promise<ServerFixtures>((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 60 s: ${stderr.join('')}`)), 60_000);
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.startsWith(READY)) {
          clearTimeout(timer);
          resolve(JSON.parse(line.slice(READY.length)) as ServerFixtures);
        } else if (line.startsWith(COLLECTIONS)) {
          answers.shift()?.(JSON.parse(line.slice(COLLECTIONS.length)) as Collections);
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) before it was ready: ${stderr.join('')}`));
    });
  });

  const pid = child.pid!;
  const status = () => {
    try {
      return readFileSync(`/proc/${pid}/status`, 'utf8');
    } catch {
      return undefined;
    }
  };
  const kib = (text: string, field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN);
  return {
    name,
    pid,
    fixtures,
    resetPeakRss() {
      try {
        writeFileSync(`/proc/${pid}/clear_refs`, '5');
      } catch {
        // Not Linux, or not allowed: the peak is then the process's peak so far.
      }
    },
    cpuMs() {
      const stat = statOf(pid);
      return stat && cpuMsOf(stat.fields, false);
    },
    collections() {
      return new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve(undefined);
        const timer = setTimeout(() => {
          answers.splice(answers.indexOf(answer), 1);
          resolve(undefined);
        }, 2000);
        const answer = (collections: Collections) => {
          clearTimeout(timer);
          resolve(collections);
        };
        answers.push(answer);
        child.stdin!.write(`${ASK_COLLECTIONS}\n`);
      });
    },
    rss() {
      const text = status();
      return text ? { peak: kib(text, 'VmHWM') / 1024, current: kib(text, 'VmRSS') / 1024 } : undefined;
    },
    async pause() {
      for (let tries = 0; child.exitCode === null && child.signalCode === null; tries += 1) {
        child.kill('SIGSTOP');
        await stoppedAll(pid);
        if (tries === PAUSE_TRIES || !heldSqliteLocks(pid)) return;
        child.kill('SIGCONT');
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    },
    resume() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGCONT');
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      // A paused process would keep its SIGTERM pending.
      child.kill('SIGCONT');
      child.kill('SIGTERM');
      const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 8000).unref());
      if ((await Promise.race([exited, timeout])) === 'timeout') {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** A line of /proc/stat ('cpu' for the machine, 'cpu0' for one core): its first 8 fields. */
function procStat(line: string): number[] | undefined {
  try {
    // cpu  user nice system idle iowait irq softirq steal ...
    const found = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`${line} `));
    return found?.trim().split(/\s+/).slice(1, 9).map(Number);
  } catch {
    return undefined;
  }
}

/**
 * Starts measuring the share of this machine's CPU time the hypervisor gave to other guests
 * ("steal", /proc/stat): while it is high, every process here stalls, whatever it runs. Returns a
 * reading in percent since the start, undefined where /proc/stat is missing.
 */
export function stealMeter(): () => number | undefined {
  const read = () => {
    const fields = procStat('cpu');
    return fields && { steal: fields[7]!, total: fields.reduce((a, b) => a + b, 0) };
  };
  const start = read();
  return () => {
    const end = read();
    if (!start || !end || end.total === start.total) return undefined;
    return (100 * (end.steal - start.steal)) / (end.total - start.total);
  };
}

// /proc/stat counts in USER_HZ ticks, 100 a second on Linux whatever the kernel's own HZ.
const MS_PER_TICK = 10;

/**
 * Starts measuring the time the hypervisor took the servers' core away (its steal, /proc/stat, in
 * steps of 10 ms): the server does nothing meanwhile, and the requests in flight wait. Returns a
 * reading in ms since the start, undefined where /proc/stat is missing or nothing is pinned.
 */
export function serverCoreStealMeter(): () => number | undefined {
  const read = () => (cpus ? procStat(`cpu${cpus.server}`)?.[7] : undefined);
  const start = read();
  return () => {
    const end = read();
    return start === undefined || end === undefined ? undefined : (end - start) * MS_PER_TICK;
  };
}

/**
 * Whether a process holds one of SQLite's WAL locks (Linux /proc/locks): the write, checkpoint or
 * recovery lock, or a reader's, bytes 120-127 of a database's shared index (-shm); every
 * connection holds byte 128 and the database file's shared range while it is open. A process
 * stopped holding the write lock stopped every other process's commits on that database: the
 * checkpoint thread of the companion API, stopped while it cut the WAL back, left the
 * authorization server's commits waiting 5 s each (the busy timeout), and the paced run timed
 * out. Stopped in a checkpoint or a read, it kept the server's checkpoints from finishing.
 */
function heldSqliteLocks(pid: number): boolean {
  let locks: string;
  try {
    locks = readFileSync('/proc/locks', 'utf8');
  } catch {
    return false;
  }
  // "1: POSIX  ADVISORY  WRITE 9341 fe:00:2146421 120 120"
  return locks.split('\n').some((line) => {
    const [, , , , owner, , start, end] = line.trim().split(/\s+/);
    return Number(owner) === pid && Number(start) >= 120 && Number(end) <= 127;
  });
}
const PAUSE_TRIES = 500;

/** Resolves once every thread of a process sent SIGSTOP has stopped (Linux /proc; at once elsewhere). */
async function stoppedAll(pid: number): Promise<void> {
  for (let polls = 0; polls < 100; polls += 1) {
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      return;
    }
    if (tasks.every((tid) => ['T', 't', 'Z', 'X'].includes(statOf(`${pid}/task/${tid}`)?.fields[0] ?? 'X'))) return;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/**
 * A process's /proc/PID/stat: its command name, and the fields after it (the name is in
 * parentheses and may hold spaces); undefined when it cannot be read.
 */
function statOf(pid: number | string): { name: string; fields: string[] } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = text.lastIndexOf(')');
    return { name: text.slice(text.indexOf('(') + 1, close), fields: text.slice(close + 2).split(' ') };
  } catch {
    return undefined;
  }
}

/** utime + stime (+ cutime + cstime: children waited for) in ms: clock ticks, 100 a second. */
const cpuMsOf = (fields: string[], withChildren: boolean) =>
  (Number(fields[11]) + Number(fields[12]) + (withChildren ? Number(fields[13]) + Number(fields[14]) : 0)) * 10;

/**
 * Every user-space process on this machine (kernel threads left out) by pid: its name and its CPU
 * time with that of the children it waited for, so that a process that came and went between two
 * readings shows in its parent's (or, orphaned, in init's).
 */
function userProcesses(): Map<number, { name: string; ms: number }> | undefined {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return undefined;
  }
  const processes = new Map<number, { name: string; ms: number }>();
  for (const pid of pids) {
    const stat = statOf(pid); // undefined: gone meanwhile, its time now in its parent's
    // Kernel threads are kthreadd (2) and its children: the kernel's own work, much of it the
    // servers' disk writes, is theirs to do.
    if (!stat || pid === '2' || stat.fields[1] === '2') continue;
    processes.set(Number(pid), { name: stat.name, ms: cpuMsOf(stat.fields, true) });
  }
  return processes;
}

/**
 * Measures, lap by lap, the CPU time that user-space processes outside the benchmark used: all
 * but this process (with the children it waited for, e.g. the paced client), the servers, and a
 * local PostgreSQL server's processes in a lap that says `postgresIsOurs`. A service of the
 * machine waking up (here RabbitMQ starts a short-lived Erlang VM about once a minute, ~250 ms of
 * CPU) takes its CPU from the servers or from the load generator, whatever they are doing.
 * `lap` returns the reading in ms since the previous lap (or the start) and starts the next one;
 * undefined where /proc cannot be read.
 */
export function othersCpuMeter(servers: Iterable<RunningServer>): { lap(postgresIsOurs: boolean): number | undefined } {
  const ours = new Set([process.pid, ...[...servers].map((s) => s.pid)]);
  let last = userProcesses();
  return {
    lap(postgresIsOurs) {
      const start = last;
      const end = (last = userProcesses());
      if (!start || !end) return undefined;
      let others = 0;
      for (const pid of new Set([...start.keys(), ...end.keys()])) {
        const name = (end.get(pid) ?? start.get(pid))!.name;
        if (ours.has(pid) || (postgresIsOurs && name === 'postgres')) continue;
        others += (end.get(pid)?.ms ?? 0) - (start.get(pid)?.ms ?? 0);
      }
      return Math.max(0, others);
    },
  };
}

/**
 * Waits (10 s at most) until the servers use almost no CPU: work a previous row left queued (the
 * password hashes of abandoned authorization-code flows) must not slow the next row down.
 */
export async function waitUntilIdle(servers: Iterable<RunningServer>): Promise<void> {
  const list = [...servers];
  const total = () => list.reduce((sum, s) => sum + (s.cpuMs() ?? 0), 0);
  for (let waited = 0; waited < 10_000; waited += 250) {
    const before = total();
    await new Promise((resolve) => setTimeout(resolve, 250));
    if (total() - before <= 20) return;
  }
}
