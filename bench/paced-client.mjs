// The paced load generator, as a small process of its own (plain JavaScript, nothing else loaded).
// Run by paced.ts:
//   node bench/paced-client.mjs '{"origin":..., "method":..., "path":..., "headers":{...}, "body":..., "rate":..., "seconds":..., "connections":...,
//                                 "rotate": {"bodyBefore":..., "field":..., "seeds":[...]} (optional)}'
// Prints one JSON line: { p50, p99, requests, failures, rps, longestPause }.
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
  const conn = { socket: undefined, issuedAt: 0, busy: false, buf: Buffer.alloc(0), token: rotate ? seeds.pop() : undefined };
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
  conn.send = (issuedAt) => {
    conn.busy = true;
    conn.issuedAt = issuedAt;
    conn.socket.write(rotate ? withToken(conn.token) : request);
  };
  return conn;
}

let stopped = false;
let longestPause = 0;
let record = () => {};
let waiting = []; // when the requests that found every connection busy were issued, oldest first
let waitingFrom = 0;
const idle = [];
const connections = Array.from({ length: spec.connections }, () => connection((conn, good) => {
  // Latency runs from when the request was issued: time spent waiting for a free connection (all
  // of them busy at the server) counts; a late turn of this process's own loop does not.
  record(performance.now() - conn.issuedAt, good);
  if (waitingFrom < waiting.length) conn.send(waiting[waitingFrom++]);
  else idle.push(conn);
}));
idle.push(...connections);

/** Sends `rate` requests a second for `seconds`, evenly spaced; polls every turn of the loop. */
function paced(seconds, onAnswer) {
  const total = Math.max(1, Math.round(spec.rate * seconds));
  const interval = 1000 / spec.rate;
  let sent = 0;
  let answered = 0;
  waiting = [];
  waitingFrom = 0;
  record = (ms, good) => {
    onAnswer(ms, good);
    answered += 1;
  };
  return new Promise((resolve) => {
    const started = performance.now();
    let lastTick = started;
    const tick = () => {
      const now = performance.now();
      // This process's own longest pause between turns: a stall here (its CPU taken by another
      // process or by the hypervisor) is one the latencies it measures may include.
      if (now - lastTick > longestPause) longestPause = now - lastTick;
      lastTick = now;
      while (sent < total && started + sent * interval <= now) {
        const conn = idle.pop();
        if (conn) conn.send(now);
        else waiting.push(now);
        sent += 1;
      }
      if (answered < total) setImmediate(tick);
      else resolve((performance.now() - started) / 1000);
    };
    tick();
  });
}

// Warm up this process's JIT and the connections first.
await paced(Math.min(1, spec.seconds / 3), () => {});
longestPause = 0;
const latencies = new Float64Array(Math.round(spec.rate * spec.seconds) + 16);
let count = 0;
let failures = 0;
const elapsed = await paced(spec.seconds, (ms, good) => {
  latencies[count++] = ms;
  if (!good) failures += 1;
});
stopped = true;
for (const conn of connections) conn.socket.destroy();
const sorted = latencies.subarray(0, count).sort();
const at = (p) => sorted[Math.min(count - 1, Math.floor((p / 100) * count))];
process.stdout.write(`${JSON.stringify({ p50: at(50), p99: at(99), requests: count, failures, rps: count / elapsed, longestPause })}\n`);
