/**
 * One benchmark target in its own process: `node bin/run-ts.mjs bench/server.ts '<ServerSpec JSON>'`.
 * Prints one READY line with its fixtures, serves until SIGTERM, then closes and removes its data.
 */
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { ASK_COLLECTIONS, COLLECTIONS, READY, type Collections, type ServerFixtures, type ServerSpec } from './protocol.ts';

const spec = JSON.parse(process.argv[2] ?? '{}') as ServerSpec;

async function boot(): Promise<{ fixtures: ServerFixtures; close(): Promise<void> }> {
  switch (spec.kind) {
    case 'koa':
      return (await import('./servers/koa.ts')).start();
    case 'peer':
      return (await import('./servers/peer.ts')).start(spec.mode);
    case 'latchkey':
      return (await import('./servers/latchkey.ts')).start(spec);
    case 'latchkey-api':
      return (await import('./servers/latchkey-api.ts')).start(spec);
    default:
      throw new Error(`unknown server kind ${String(spec.kind)}`);
  }
}

// oidc-provider warns once that Node 20 is not a supported runtime; the bench output has no room for it.
process.removeAllListeners('warning');

const running = await boot();
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  const force = setTimeout(() => process.exit(1), 5000);
  force.unref();
  try {
    await running.close();
  } finally {
    process.exit(0);
  }
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The garbage collections since the benchmark last asked: it asks before and after a paced run.
// The memory reducer's carry ALL_EXTERNAL_MEMORY without SYNCHRONOUS_PHANTOM_PROCESSING (see Collections).
const ALL_EXTERNAL = constants.NODE_PERFORMANCE_GC_FLAGS_ALL_EXTERNAL_MEMORY;
const REDUCER_MASK = ALL_EXTERNAL | constants.NODE_PERFORMANCE_GC_FLAGS_SYNCHRONOUS_PHANTOM_PROCESSING;
const noCollections = (): Collections => ({ full: 0, byMemoryReducer: 0, longestPauseMs: 0 });
let collections = noCollections();
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    const detail = (entry as PerformanceEntry & { detail?: { kind?: number; flags?: number } }).detail;
    if (detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
      collections.full += 1;
      if (((detail.flags ?? 0) & REDUCER_MASK) === ALL_EXTERNAL) collections.byMemoryReducer += 1;
    }
    collections.longestPauseMs = Math.max(collections.longestPauseMs, entry.duration);
  }
}).observe({ entryTypes: ['gc'] });
const asked = createInterface({ input: process.stdin });
asked.on('line', (line) => {
  if (line !== ASK_COLLECTIONS) return;
  process.stdout.write(`${COLLECTIONS}${JSON.stringify(collections)}\n`);
  collections = noCollections();
});
// If the benchmark dies without a word, its end of the pipe closes: stop with it.
asked.on('close', stop);
process.stdout.write(`${READY}${JSON.stringify(running.fixtures)}\n`);
