import { AsyncResource } from 'node:async_hooks';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import knexFactory, { type Knex } from 'knex';
import { migrationSource } from './migrations/index.ts';

export type Dialect = 'sqlite' | 'postgres';

export interface Database {
  knex: Knex;
  dialect: Dialect;
  close(): Promise<void>;
}

/** Accepts `postgres://...`, `sqlite:/path/file.sqlite`, or a plain file path. */
export function parseDatabaseUrl(url: string): { dialect: Dialect; target: string } {
  if (/^postgres(ql)?:\/\//.test(url)) return { dialect: 'postgres', target: url };
  const file = url.startsWith('sqlite:') ? url.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '') : url;
  if (!file) throw new Error('DATABASE_URL names no SQLite file');
  return { dialect: 'sqlite', target: file === ':memory:' ? file : path.resolve(file) };
}

export function openDatabase(url: string): Database {
  const { dialect, target } = parseDatabaseUrl(url);
  if (dialect === 'postgres') {
    const knex = knexFactory({ client: 'pg', connection: target, pool: { min: 0, max: 10 } });
    poolOutsideRequests(knex);
    return { knex, dialect, close: () => knex.destroy() };
  }
  if (target !== ':memory:') mkdirSync(path.dirname(target), { recursive: true });
  // The connection once the pool has made it, for the checkpoint thread to hand work back to.
  let connection: Pragmas | undefined;
  const checkpointer = target === ':memory:' ? undefined : startCheckpointer(target, () => connection);
  const knex = knexFactory({
    client: 'better-sqlite3',
    connection: { filename: target },
    useNullAsDefault: true,
    // better-sqlite3 is synchronous: one connection serves the whole process without contention.
    pool: {
      min: 1,
      max: 1,
      afterCreate(conn: Pragmas, done: (err: Error | null, conn: unknown) => void) {
        // WAL lets readers run beside the writer (and other processes, such as the CLI);
        // NORMAL sync is durable against process crashes and is WAL's recommended setting;
        // the busy timeout waits for another process's write instead of failing at once.
        conn.pragma('journal_mode = WAL');
        conn.pragma('synchronous = NORMAL');
        conn.pragma('busy_timeout = 5000');
        conn.pragma('foreign_keys = ON');
        conn.pragma(`cache_size = ${PAGE_CACHE_KIB}`);
        // Checkpoints (copying the WAL into the database file, with an fsync) and cutting a long
        // WAL file back run on a thread of their own (startCheckpointer): see checkpointsOf.
        checkpointsOf(conn, checkpointer?.mode() ?? 'own');
        connection = conn;
        done(null, conn);
      },
    },
  });
  poolOutsideRequests(knex);
  if (checkpointer) {
    gates.set(knex, checkpointer.gate);
    // Writes through Knex (keys, accounts, clients, API-key usage) owe the thread a checkpoint
    // too; the token store's commits say so at the gate.
    knex.on('query-response', (_response: unknown, query: { method?: string }) => {
      if (!READS.has(query.method ?? '')) checkpointer.wrote();
    });
  }
  return {
    knex,
    dialect,
    async close() {
      await checkpointer?.stop();
      await knex.destroy();
    },
  };
}

/**
 * Knex's pool takes and gives back its connections in an async context of its own, not in that of
 * the request that asked. Whatever async a request makes keeps oidc-provider's AsyncLocalStorage
 * store, the request's Koa context, and through it the whole request (its headers, credentials
 * included): the pool's entry for a connection given back (a promise it makes then, in its free
 * list until the connection is taken again) and a new connection's socket (for as long as the
 * connection lives) each kept one request alive. After a load on PostgreSQL, 19 answered requests
 * were still in memory this way (a heap snapshot); now none are (test/pool-context.test.ts).
 * The caller's own context is untouched: what follows its `await` runs in it as before.
 */
function poolOutsideRequests(knex: Knex): void {
  const client = knex.client as { acquireConnection(): Promise<unknown>; releaseConnection(connection: unknown): Promise<unknown> };
  const acquire = client.acquireConnection.bind(client);
  const release = client.releaseConnection.bind(client);
  client.acquireConnection = () => poolContext.runInAsyncScope(acquire);
  client.releaseConnection = (connection) => poolContext.runInAsyncScope(release, null, connection);
}

/** The context poolOutsideRequests runs the pool in: made as this module loads, outside any request. */
const poolContext = new AsyncResource('LatchkeyPool');

type Pragmas = { pragma(sql: string): unknown };
// SQLite's page cache for the connection, in KiB when negative (SQLite's own default, 2 MiB).
// better-sqlite3 builds SQLite with 16 MiB (SQLITE_DEFAULT_CACHE_SIZE=-16000), and after the
// benchmark's token rows that cache held ~16 MiB of the server's RSS. The pages writes and reads
// keep coming back to are few: tokens go to the right edge of the table's B-tree (ids in order of
// issue, see token-ids.ts) and near the right edges of expires_at's index (one for each lifetime);
// other pages, a refresh token's grant_id entry among them, come from the operating system's
// cache of the file (client_credentials 1.06x and refresh_token 0.93x the peer with 2 MiB in one
// partial run here; 0.99-1.14x and 0.88-0.97x in full runs with 16 MiB the same day).
const PAGE_CACHE_KIB = -2000;
const READS = new Set(['select', 'first', 'pluck']);

/**
 * Who checkpoints the WAL and cuts it back. 'thread': the checkpoint thread (startCheckpointer).
 * The server's connection then never truncates the WAL, and checkpoints only as a fallback, when
 * the WAL has grown far longer than the thread lets it. On that connection, the one commit that
 * did either held the event loop for 15-70 ms here: the copying and fsync, or truncating a WAL
 * file that had grown past WAL_SIZE_LIMIT_BYTES. 'starved': the same, but a saturated event loop
 * starves the thread (yieldIfStarved), and the fallback comes sooner. 'own': no thread (it failed,
 * or an in-memory database), and SQLite's defaults.
 */
type CheckpointMode = 'thread' | 'starved' | 'own';
function checkpointsOf(conn: Pragmas, mode: CheckpointMode): void {
  conn.pragma(`wal_autocheckpoint = ${FALLBACK_CHECKPOINT_PAGES[mode]}`);
  conn.pragma(`journal_size_limit = ${mode === 'own' ? WAL_SIZE_LIMIT_BYTES : -1}`);
}

// 'own' keeps SQLite's default, 1000 pages (4 MiB of WAL). The thread finishes its checkpoints
// at COMPLETE_AT_FRAMES, yet at half of the benchmark's load the WAL grew to 10,000-19,000 frames
// between them here, and a fallback at 10,000 frames (always, before) stalled the loop.
const FALLBACK_CHECKPOINT_PAGES: Record<CheckpointMode, number> = { thread: 32_768, starved: 10_000, own: 1000 };
// A WAL file that grew longer than this (a burst of writes) is cut back once writes stop.
const WAL_SIZE_LIMIT_BYTES = 32 * 1024 * 1024;
const CHECKPOINT_EVERY_MS = 200;
// A WAL this long (frames, 16 MiB) that writes kept the checkpoint thread from copying to its end
// is finished with this process's commits held back for a moment (see WriteGate).
const COMPLETE_AT_FRAMES = 4096;
const FEW_FRAMES = 64;
const MAX_PASSES = 8;
// The checkpoint thread is starved when it ran no checkpoint for this long while this process's
// event loop was this busy (its share of the time): it stands aside then (yieldIfStarved).
const STARVED_AFTER_MS = 2000;
const SATURATED = 0.95;
const YIELD_MS = 100;

// The Int32Array this process shares with its checkpoint thread: who may append to the WAL now,
// and whether commits are waiting for the thread to let go.
const GATE = 0;
const WAITING = 1;
// How many rounds (CHECKPOINT_EVERY_MS) the thread has finished in which its checkpoint ran, or
// it had nothing to do: rounds in which it got the CPU and no other connection held it off.
const ROUNDS = 2;
// Set with each write this process makes (wrote()): the thread owes the WAL a checkpoint.
const WROTE = 3;
// Set while this process's event loop is saturated and starves the thread (yieldIfStarved).
const STARVED = 4;
const FREE = 0;
const WRITING = 1;
const CHECKPOINTING = 2;

/**
 * Under a steady stream of writes a PASSIVE checkpoint never catches up with the end of the WAL
 * (frames arrive while it copies), so the WAL never starts over; it grew until this process's own
 * connection checkpointed (at 10,000 frames), which held the event loop for 10-25 ms (two
 * fsyncs and the copying) every 0.8 s at 3,700 tokens a second here. Instead, once the WAL is
 * COMPLETE_AT_FRAMES long, the checkpoint thread finishes the checkpoint itself: passes, each
 * after syncing the database file, until few frames come during one, then it syncs the database
 * file, takes the gate, copies the rest (PASSIVE, so it waits for no one) and lets go. While it
 * holds the gate, this process's batched commits wait for it (`whenOpen`) and the event loop goes
 * on; the next commit starts the WAL over. At 6,000 tokens a second here the commits waited 2-4 ms
 * each time, mostly the copying and syncing of what came during the last pass. With one sync
 * after passes back to back, the frames that came during that sync (25-38 ms) were the held
 * pass's: 5-11 ms, and p99 at that rate rose to 8-15 ms.
 */
export interface WriteGate {
  /** Takes the gate for a write transaction on this process's connection; false while the checkpoint thread holds it. */
  enter(): boolean;
  leave(): void;
  /** Calls `then` once the checkpoint thread has let go of the gate. */
  whenOpen(then: () => void): void;
}

const gates = new WeakMap<Knex, WriteGate>();

/** The write gate of a SQLite database opened by openDatabase (none for PostgreSQL or :memory:). */
export const writeGateOf = (knex: Knex): WriteGate | undefined => gates.get(knex);

// Runs in the checkpoint thread: a connection of its own that copies committed WAL frames into
// the database file. PASSIVE never waits for, nor blocks, the server's readers and writers.
const checkpointThread = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const fs = require('node:fs');
// No busy timeout: PASSIVE never waits anyway, and TRUNCATE (below) must fail at once rather
// than wait for a reader while it holds the write lock every connection's commits need.
const db = new Database(workerData.file, { timeout: 0 });
db.pragma('synchronous = NORMAL');
const dbFile = fs.openSync(workerData.file, 'r+'); // only to fsync it (Windows wants write access for that)
// The lowest priority, for this thread only: see startCheckpointer. Only on Linux, where a thread's
// nice value is its own; elsewhere this would lower the whole process.
if (process.platform === 'linux') {
  try { require('node:os').setPriority(19); } catch {}
}
const shared = new Int32Array(workerData.shared);
const { GATE, WAITING, ROUNDS, WROTE, STARVED, FREE, WRITING, CHECKPOINTING } = workerData.slots;
const checkpoint = () => db.pragma('wal_checkpoint(PASSIVE)')[0]; // { busy, log, checkpointed }
// The server's commit in progress, if any, takes well under a millisecond.
const hold = () => {
  for (let tries = 0; tries < 50; tries += 1) {
    if (Atomics.compareExchange(shared, GATE, FREE, CHECKPOINTING) === FREE) return true;
    Atomics.wait(shared, GATE, WRITING, 1);
  }
  return false;
};
const release = () => {
  Atomics.store(shared, GATE, FREE);
  if (Atomics.load(shared, WAITING) === 1) parentPort.postMessage('open');
};
// A pass copies the frames that were in the WAL when it began; under a steady stream of writes
// more have come by the time it ends, and the WAL only starts over once a checkpoint has caught up
// with the last frame. So a long WAL gets a second pass with the gate held, when no frame comes.
let finished = -1; // the WAL's length after the last held pass: nothing came since, nothing to do
let last = -1; // the WAL's length in the round before
// A thread checkpoints only what its own process wrote (WROTE: the token store's commits, and
// writes through Knex): the WAL up to its length at the first pass after a write (\`owed\`), and a
// WAL file left long once it is all copied. Another process's thread (\`latchkey api\` between its
// usage writes) would otherwise hold the checkpoint lock beside the server's, for nothing; starved
// of CPU by a saturated server in the middle of a pass, it kept both the server's thread and
// connection from checkpointing. -1: nothing owed; a WAL an earlier process left goes with the
// next write's.
const ALL = Number.MAX_SAFE_INTEGER;
let owed = -1;
const walBytes = () => {
  try {
    return fs.statSync(workerData.file + '-wal').size;
  } catch {
    return 0;
  }
};
// While this process's event loop is saturated, its connection checkpoints instead.
const standAside = () => Atomics.load(shared, STARVED) === 1;
const timer = setInterval(() => {
  let ran = false; // a checkpoint ran (no other connection's held it off), or none was owed
  try {
    if (standAside()) {
      ran = true;
      return;
    }
    const wrote = Atomics.exchange(shared, WROTE, 0) === 1;
    if (wrote) owed = ALL;
    if (owed === -1) {
      ran = true;
      return;
    }
    let pass = checkpoint();
    ran = pass.busy === 0;
    if (!ran) return;
    if (owed === ALL) owed = pass.log;
    const quiet = pass.log === last;
    last = pass.log;
    // A burst left the WAL file long: once all is copied and no frame came for a round, it is cut
    // back (the server's connection never does, see openDatabase). TRUNCATE waits for no one
    // either: busy while another connection reads or writes, and then the next quiet round tries.
    const long = walBytes() > workerData.walSizeLimit;
    if (long && quiet && pass.checkpointed === pass.log) {
      if (hold()) {
        try {
          db.pragma('wal_checkpoint(TRUNCATE)');
        } finally {
          release();
        }
      }
      return;
    }
    // What this process wrote is copied (or the WAL started over since), and it wrote nothing
    // since: the rest, if any, is the other processes' threads' to finish. It still owes cutting
    // a long WAL file back.
    if (!wrote && (pass.checkpointed >= owed || pass.log < owed)) {
      if (!long) owed = -1;
      return;
    }
    if (pass.log < workerData.completeAtFrames || pass.log === finished) return;
    // Passes until few frames came during one, each after an fsync of what the pass before it
    // copied (only a pass that reaches the end of the WAL syncs, and then every page copied since
    // the last sync). The pass with the gate held then has few pages to copy and sync. Frames keep
    // coming during each pass and its fsync, fewer each time, down to what comes during the
    // fsync's own floor (~150 frames in a few ms at 6,000 tokens a second here).
    for (let more = 0; more < workerData.maxPasses; more += 1) {
      if (standAside()) return;
      fs.fsyncSync(dbFile);
      const before = pass.log;
      pass = checkpoint();
      if (pass.log - before < workerData.fewFrames) break;
    }
    fs.fsyncSync(dbFile);
    if (standAside() || !hold()) return;
    try {
      finished = checkpoint().log;
    } finally {
      release();
    }
  } catch {
    // Busy or gone: the next round tries again.
  } finally {
    if (ran) {
      Atomics.add(shared, ROUNDS, 1);
      Atomics.notify(shared, ROUNDS);
    }
  }
}, workerData.everyMs);
parentPort.once('message', () => { clearInterval(timer); db.close(); fs.closeSync(dbFile); parentPort.close(); });
`;

/**
 * A WAL checkpoint writes pages back to the database file and fsyncs it: milliseconds that, on the
 * server's own connection, would stall every request in flight (better-sqlite3 is synchronous).
 * A thread with its own connection does that work instead, off the event loop. Commits are
 * unaffected: each is durable in the WAL (synchronous=NORMAL) before its statement returns.
 *
 * On Linux the thread runs at the lowest priority (nice 19). In the fsync of the database file it
 * is woken each time a page has been written back, hundreds of times a checkpoint; at the
 * server's own priority each of those wake-ups took the core from the event loop (when both share
 * one), and requests waited 10-80 ms every 200 ms under a stream of writes. At the lowest
 * priority it runs when the event loop waits for I/O.
 */
function startCheckpointer(file: string, connection: () => Pragmas | undefined): { gate: WriteGate; wrote(): void; mode(): CheckpointMode; stop(): Promise<void> } {
  // One Int32 per slot: GATE, WAITING, ROUNDS, WROTE, STARVED (the last).
  const shared = new Int32Array(new SharedArrayBuffer((STARVED + 1) * Int32Array.BYTES_PER_ELEMENT));
  const worker = new Worker(checkpointThread, {
    eval: true,
    workerData: {
      file,
      driver: createRequire(import.meta.url).resolve('better-sqlite3'),
      everyMs: CHECKPOINT_EVERY_MS,
      completeAtFrames: COMPLETE_AT_FRAMES,
      fewFrames: FEW_FRAMES,
      maxPasses: MAX_PASSES,
      walSizeLimit: WAL_SIZE_LIMIT_BYTES,
      shared: shared.buffer,
      slots: { GATE, WAITING, ROUNDS, WROTE, STARVED, FREE, WRITING, CHECKPOINTING },
    },
  });
  // It must never keep a process alive (CLI commands close their database, but a crash must not hang).
  worker.unref();
  let waiting: (() => void)[] = [];
  let gone = false;
  // Once the thread is starved (yieldIfStarved), the loop is looked at again every STARVED_AFTER_MS
  // even if no write comes: the thread is to take over again once the loop has calmed down, and
  // cut back the WAL it left.
  let recheck: NodeJS.Timeout | undefined;
  const open = () => {
    if (waiting.length === 0) return;
    const then = waiting;
    waiting = [];
    Atomics.store(shared, WAITING, 0);
    worker.unref();
    for (const f of then) f();
  };
  worker.on('message', open);
  worker.on('error', () => {
    // Without it the server's own connection checkpoints ('own'): slower, still correct.
  });
  let stopping = false;
  const exited = new Promise<void>((resolve) => worker.once('exit', () => {
    // Whatever it held, nothing waits for it any more.
    gone = true;
    clearInterval(recheck);
    Atomics.store(shared, GATE, FREE);
    open();
    const conn = connection();
    if (!stopping && conn) checkpointsOf(conn, 'own');
    resolve();
  }));
  // The thread runs at the lowest priority, and a saturated server starves it of CPU, maybe in the
  // middle of a checkpoint, holding the lock that also stops this connection's fallback checkpoint:
  // the WAL then grew for as long as the server stayed saturated (to 129 MB in 4 s here). So when
  // the thread has run no round for STARVED_AFTER_MS and the event loop was busy SATURATED of that
  // time, the thread is starved: it stands aside (STARVED) until a window of STARVED_AFTER_MS in
  // which the loop was not saturated, and this connection's fallback checkpoints sooner
  // ('starved'). A round it is in the middle of gets the core to finish: this thread waits for it
  // (with nothing else running: a few ms), at most YIELD_MS, once a window while it runs none.
  // A loop that is merely busy leaves the thread enough moments: it may then take seconds for a
  // round, and nothing waits for it. Two seconds, not less: after a moment's backlog a busy loop
  // can be saturated for half a second, and waits of 100 ms (a long WAL takes the thread that
  // long) then made more backlog.
  let rounds = 0;
  let since = performance.now();
  let loop = performance.eventLoopUtilization();
  let starved = false;
  const yieldIfStarved = () => {
    const finished = Atomics.load(shared, ROUNDS);
    if (!starved && finished !== rounds) {
      // The thread ran a round: a new window.
      rounds = finished;
      since = performance.now();
      loop = performance.eventLoopUtilization();
      return;
    }
    if (performance.now() - since < STARVED_AFTER_MS) return;
    // A window with no round (or, once starved, any window) in which the loop was saturated.
    const now = performance.eventLoopUtilization(loop).utilization >= SATURATED;
    if (now !== starved) {
      starved = now;
      Atomics.store(shared, STARVED, starved ? 1 : 0);
      const conn = connection();
      if (conn) checkpointsOf(conn, starved ? 'starved' : 'thread');
      clearInterval(recheck);
      recheck = starved ? setInterval(yieldIfStarved, STARVED_AFTER_MS).unref() : undefined;
    }
    // A thread that ran no round since may be in the middle of one, holding the checkpoint lock
    // that this connection's fallback needs too: it gets the core to finish.
    if (starved && finished === rounds) Atomics.wait(shared, ROUNDS, rounds, YIELD_MS);
    rounds = Atomics.load(shared, ROUNDS);
    since = performance.now();
    loop = performance.eventLoopUtilization();
  };
  const wrote = () => void Atomics.store(shared, WROTE, 1);
  const gate: WriteGate = {
    enter() {
      if (gone) return true;
      yieldIfStarved();
      if (Atomics.compareExchange(shared, GATE, FREE, WRITING) !== FREE) return false;
      wrote();
      return true;
    },
    leave: () => void Atomics.compareExchange(shared, GATE, WRITING, FREE),
    whenOpen(then) {
      waiting.push(then);
      if (waiting.length > 1) return;
      // Held commits keep the process alive until they are made.
      worker.ref();
      Atomics.store(shared, WAITING, 1);
      // The thread may have let go before it could see WAITING: look again.
      if (gone || Atomics.load(shared, GATE) !== CHECKPOINTING) setImmediate(open);
    },
  };
  return {
    gate,
    wrote,
    mode: () => (gone ? 'own' : starved ? 'starved' : 'thread'),
    async stop() {
      stopping = true;
      worker.postMessage('stop');
      const force = setTimeout(() => void worker.terminate(), 2000);
      await exited;
      clearTimeout(force);
    },
  };
}

export async function migrate(db: Database): Promise<string[]> {
  const [, applied] = await db.knex.migrate.latest({ migrationSource });
  return applied as string[];
}
