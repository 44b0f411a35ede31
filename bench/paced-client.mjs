// The paced load generator, as a small process of its own (plain JavaScript, nothing else loaded).
// Run by paced.ts:
//   node bench/paced-client.mjs '{"origin":..., "method":..., "path":..., "headers":{...}, "body":..., "rate":..., "seconds":..., "connections":..., "sharesCore":...,
//                                 "rotate": {"bodyBefore":..., "field":..., "seeds":[...]} (optional)}'
// Prints one JSON line: { p50, p99, requests, failures, rps, longestPause, longestSilence, longestWait }; or, when no answer
// came for STALLED_MS while requests were due or in flight, { stalled } and exits with 3.
//
// It speaks HTTP/1.1 over its keep-alive sockets itself: one request, serialised once, written
// again and again, and only the status line and the framing of each answer read. Node's HTTP
// client allocates enough per request that its own garbage collections (5-12 ms each at a
// thousand requests a second here) and the stalls they cause landed in the very latencies it
// measured. This allocates almost nothing per request, so what it measures is the server.
import net from 'node:net';

const spec = JSON.parse(process.argv[2]);
const origin = new URL(spec.origin);
const body = spec.body === undefined ? undefined : Buffer.from(spec.body);
const headLines = [
  `${spec.method} ${spec.path} HTTP/1.1`,
  `host: ${origin.host}`,
  'connection: keep-alive',
  ...Object.entries(spec.headers ?? {}).map(([name, value]) => `${name}: ${value}`),
];
/** The request's bytes: its head, then the body (with its length) if it has one. */
const serialise = (payload) => Buffer.concat([
  Buffer.from([...headLines, ...(payload ? [`content-length: ${payload.length}`] : []), '', ''].join('\r\n'), 'latin1'),
  ...(payload ? [payload] : []),
]);
const request = serialise(body);

// A single-use credential in the body that every answer replaces (a rotating refresh token):
// each connection sends the one its last answer carried, `bodyBefore` + the token. A connection
// whose answer carried none (a failure) takes a spare seed; with none left, its requests fail.
const rotate = spec.rotate;
const seeds = rotate ? [...rotate.seeds] : [];
const FIELD = rotate ? Buffer.from(`"${rotate.field}":"`) : undefined;
const withToken = (token) => serialise(Buffer.from(`${rotate.bodyBefore}${encodeURIComponent(token ?? 'none-left')}`));
const nextToken = (answer) => {
  const at = answer.indexOf(FIELD);
  if (at === -1) return seeds.pop();
  const from = at + FIELD.length;
  return answer.toString('latin1', from, answer.indexOf(0x22, from));
};
const ok = (status) => (spec.okStatuses ? spec.okStatuses.includes(status) : status >= 200 && status < 300);

const HEADER_END = Buffer.from('\r\n\r\n');
const LAST_CHUNK = Buffer.from('0\r\n\r\n');

/**
 * Where one answer ends in `buf` (its length in bytes), or -1 while it is incomplete; its status.
 * Answers are framed by Content-Length, or chunked (the last chunk ends them: no trailers here).
 */
function framing(buf) {
  const end = buf.indexOf(HEADER_END);
  if (end === -1) return { length: -1, status: 0 };
  const status = Number(buf.toString('latin1', 9, 12));
  const headers = buf.toString('latin1', 0, end).toLowerCase();
  const at = headers.indexOf('\r\ncontent-length:');
  if (at !== -1) {
    const length = end + 4 + Number.parseInt(headers.slice(at + 17), 10);
    return { length: buf.length >= length ? length : -1, status };
  }
  if (headers.includes('\r\ntransfer-encoding: chunked')) {
    const last = buf.indexOf(LAST_CHUNK, end + 4);
    return { length: last === -1 ? -1 : last + LAST_CHUNK.length, status };
  }
  return { length: end + 4, status };
}

/** A keep-alive connection with at most one request in flight (no pipelining). */
function connection(onAnswer) {
  const conn = { socket: undefined, index: -1, busy: false, buf: Buffer.alloc(0), token: rotate ? seeds.pop() : undefined };
  const open = () => {
    conn.buf = Buffer.alloc(0);
    conn.socket = net.connect({ host: origin.hostname, port: Number(origin.port), noDelay: true });
    conn.socket.on('data', (chunk) => {
      conn.buf = conn.buf.length === 0 ? chunk : Buffer.concat([conn.buf, chunk]);
      const { length, status } = framing(conn.buf);
      if (length === -1) return;
      if (rotate) conn.token = nextToken(conn.buf.subarray(0, length));
      conn.buf = conn.buf.subarray(length);
      conn.busy = false;
      onAnswer(conn, ok(status));
    });
    conn.socket.on('error', () => {});
    conn.socket.on('close', () => {
      // A request in flight on a closed connection failed; the next one goes out on a new socket.
      const failed = conn.busy;
      conn.busy = false;
      if (failed && rotate) conn.token = seeds.pop(); // the one in flight may have been used
      if (!stopped) open();
      if (failed) onAnswer(conn, false);
    });
  };
  open();
  conn.send = (index) => {
    if (inFlight++ === 0) busySince = performance.now();
    conn.busy = true;
    conn.index = index;
    conn.socket.write(rotate ? withToken(conn.token) : request);
  };
  return conn;
}

let stopped = false;

// One run: a warm-up (this process's JIT and the connections) and then the measured seconds, on the
// same schedule and through the same code (the warm-up's answers are recorded like the others and
// left out at the end), so that nothing is compiled again, nor allocated, where the measurement
// starts. Requests are numbered in the order they are due; what is kept of each is in arrays
// allocated here, once: garbage collections of this process's own would otherwise pause it in the
// middle of what it measures.
const warmupSeconds = Math.min(1, spec.seconds / 3);
const interval = 1000 / spec.rate;
const measuredFrom = Math.round(spec.rate * warmupSeconds); // the first measured request
const total = measuredFrom + Math.max(1, Math.round(spec.rate * spec.seconds));
const issued = new Float64Array(total); // when each request was issued
const latencies = new Float64Array(total);
const good = new Uint8Array(total);
let sent = 0; // requests issued so far (due, whether a connection was free or not)
let dispatched = 0; // requests written to a connection so far: those in between wait for one
let answered = 0;
let lastAnswerAt = 0;
// This process's own longest pause between two turns of its loop, during the warm-up [0] and
// while it measures [1]: a stall here (its CPU taken by another process or by the hypervisor) is
// one the latencies it measures may include. Only [1] is reported; [0] is there so that both
// phases run the same code.
const longestPause = new Float64Array(2);
// The server's longest silence while it measures: the longest time in which requests were in
// flight and no answer came (ms). A stall of the server's (or of what it waits on: its database, the
// disk) shows here, whatever the latencies it caused.
let longestSilence = 0;
// The longest a due request waited for a free connection while it measures (ms): all of them were
// busy at the server, which had fallen behind the offered rate.
let longestWait = 0;
let inFlight = 0;
let busySince = 0; // when the first of the requests now in flight was written, if none was before
let onDone = () => {};

const idle = [];
const connections = Array.from({ length: spec.connections }, () => connection((conn, ok) => {
  // Latency runs from when the request was issued: time spent waiting for a free connection (all
  // of them busy at the server) counts; a late turn of this process's own loop does not.
  const now = performance.now();
  if (conn.index >= measuredFrom) longestSilence = Math.max(longestSilence, now - Math.max(lastAnswerAt, busySince));
  inFlight -= 1;
  lastAnswerAt = now;
  latencies[conn.index] = lastAnswerAt - issued[conn.index];
  good[conn.index] = ok ? 1 : 0;
  answered += 1;
  if (dispatched < sent) {
    if (dispatched >= measuredFrom) longestWait = Math.max(longestWait, now - issued[dispatched]);
    conn.send(dispatched++);
  } else idle.push(conn);
  if (answered === total) onDone();
}));
idle.push(...connections);

// Sends `rate` requests a second, evenly spaced, until all `total` are answered. Between turns it
// polls (setImmediate) when requests are due more often than SPIN_ABOVE_RATE a second; slower than
// that it sleeps until the next one is due (a timer: a millisecond at the least, so the requests due
// meanwhile go out together, a few at a time). It never polls while the
// server's database shares this process's core and the requests query it (`sharesCore`: a local
// PostgreSQL server, pinLocalPostgres in targets.ts; not for rows answered from memory): a loop
// that never sleeps keeps that core busy, and each query then waited for the scheduler to take the
// core from this process. Paced refresh_token on PostgreSQL @500 had a p50 of 4.9-6.0 ms with this
// process polling, 2.0-2.4 ms with it sleeping; client_credentials on PostgreSQL @4,015, polling,
// fell behind until a request waited 1.15 s. Sleeping costs a fast row its evenness: at 14,000 a
// second a late timer sends dozens of requests at once, more than the connections, and JWKS on
// PostgreSQL, which queries nothing, read 25.9, 66.8 and 190.5 ms in three full runs (a request
// waited 28-204 ms for a free connection) while JWKS on SQLite read 2.2-3.8 ms.
const SPIN_ABOVE_RATE = 4000;
const spins = spec.rate > SPIN_ABOVE_RATE && !spec.sharesCore;
const started = performance.now();
const measuredStart = started + measuredFrom * interval;
let lastTick = started;
let sleptFor = 0; // the sleep asked for before this turn: not a pause
const tick = () => {
  const now = performance.now();
  const phase = lastTick >= measuredStart ? 1 : 0;
  if (now - lastTick - sleptFor > longestPause[phase]) longestPause[phase] = now - lastTick - sleptFor;
  lastTick = now;
  while (sent < total && started + sent * interval <= now) {
    issued[sent] = now;
    if (dispatched === sent && idle.length > 0) idle.pop().send(dispatched++);
    sent += 1;
  }
  if (sent === total) return; // what is left is answers: onDone
  if (spins) {
    sleptFor = 0;
    setImmediate(tick);
    return;
  }
  sleptFor = Math.max(1, Math.floor(started + sent * interval - now));
  setTimeout(tick, sleptFor);
};
// A server that stops answering (stopped, or waiting on a lock) would otherwise keep this process
// waiting until the benchmark killed it, saying nothing of why.
const STALLED_MS = 10_000;
const watchdog = setInterval(() => {
  const since = performance.now() - Math.max(lastAnswerAt, started);
  if (since < STALLED_MS) return;
  process.stdout.write(`${JSON.stringify({ stalled: `no answer for ${(since / 1000).toFixed(0)} s: ${answered} of ${total} requests answered, ${inFlight} in flight, ${sent - dispatched} waiting for a connection` })}\n`);
  process.exit(3);
}, 1000);
await new Promise((resolve) => {
  onDone = resolve;
  tick();
});
clearInterval(watchdog);
stopped = true;
for (const conn of connections) conn.socket.destroy();
const count = total - measuredFrom;
const failures = count - good.subarray(measuredFrom).reduce((sum, g) => sum + g, 0);
const sorted = latencies.slice(measuredFrom).sort();
const at = (p) => sorted[Math.min(count - 1, Math.floor((p / 100) * count))];
const rps = count / ((lastAnswerAt - measuredStart) / 1000);
process.stdout.write(`${JSON.stringify({ p50: at(50), p99: at(99), requests: count, failures, rps, longestPause: longestPause[1], longestSilence, longestWait })}\n`);
