// The paced load generator, as a small process of its own (plain JavaScript, nothing else loaded)
// so that its own garbage collection hardly shows in the latencies it measures. Run by paced.ts:
//   node bench/paced-client.mjs '{"origin":..., "method":..., "path":..., "headers":{...}, "body":..., "rate":..., "seconds":..., "connections":...}'
// Prints one JSON line: { latencies: { p50, p99 }, requests, failures, rps }.
import http from 'node:http';

const spec = JSON.parse(process.argv[2]);
const origin = new URL(spec.origin);
const agent = new http.Agent({ keepAlive: true, maxSockets: spec.connections });
const headers = { ...spec.headers, ...(spec.body ? { 'content-length': String(Buffer.byteLength(spec.body)) } : {}) };
const ok = (status) => (spec.okStatuses ? spec.okStatuses.includes(status) : status >= 200 && status < 300);

function send(record) {
  return new Promise((resolve) => {
    const sentAt = performance.now();
    const req = http.request({ host: origin.hostname, port: origin.port, method: spec.method, path: spec.path, headers, agent }, (res) => {
      res.resume();
      res.on('end', () => {
        record(performance.now() - sentAt, ok(res.statusCode ?? 0));
        resolve();
      });
    });
    req.on('error', () => {
      record(performance.now() - sentAt, false);
      resolve();
    });
    req.end(spec.body);
  });
}

/** Sends `rate` requests a second for `seconds`, evenly spaced; polls every turn of the loop. */
async function paced(seconds, record) {
  const total = Math.max(1, Math.round(spec.rate * seconds));
  const interval = 1000 / spec.rate;
  const started = performance.now();
  const inFlight = [];
  let sent = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (sent < total && started + sent * interval <= now) {
        inFlight.push(send(record));
        sent += 1;
      }
      if (sent < total) setImmediate(tick);
      else resolve();
    };
    tick();
  });
  await Promise.all(inFlight);
  return (performance.now() - started) / 1000;
}

// Warm up this process's JIT and the connections first.
await paced(Math.min(1, spec.seconds / 3), () => {});
const latencies = new Float64Array(Math.round(spec.rate * spec.seconds) + 16);
let count = 0;
let failures = 0;
const elapsed = await paced(spec.seconds, (ms, good) => {
  latencies[count++] = ms;
  if (!good) failures += 1;
});
agent.destroy();
const sorted = latencies.subarray(0, count).sort();
const at = (p) => sorted[Math.min(count - 1, Math.floor((p / 100) * count))];
process.stdout.write(`${JSON.stringify({ p50: at(50), p99: at(99), requests: count, failures, rps: count / elapsed })}\n`);
