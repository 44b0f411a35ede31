/**
 * One benchmark target in its own process: `node bin/run-ts.mjs bench/server.ts '<ServerSpec JSON>'`.
 * Prints one READY line with its fixtures, serves until SIGTERM, then closes and removes its data.
 */
import { READY, type ServerFixtures, type ServerSpec } from './protocol.ts';

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
// If the benchmark dies without a word, its end of the pipe closes: stop with it.
process.stdin.on('end', stop);
process.stdin.resume();
process.stdout.write(`${READY}${JSON.stringify(running.fixtures)}\n`);
