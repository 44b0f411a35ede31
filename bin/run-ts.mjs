#!/usr/bin/env node
// Runs a TypeScript entry point of this repository: `node bin/run-ts.mjs bench/run.ts --quick`.
// As in bin/latchkey.mjs, load-ts.mjs compiles it, so there is no build step to forget.
import path from 'node:path';
import { importTs } from './load-ts.mjs';

const [script] = process.argv.slice(2);
if (!script) {
  process.stderr.write('usage: node bin/run-ts.mjs <file.ts> [args...]\n');
  process.exit(2);
}
// The script sees its own arguments at process.argv[2...], as if it had been run directly.
process.argv.splice(1, 2, path.resolve(script));
await importTs(script);
