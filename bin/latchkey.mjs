#!/usr/bin/env node
// The `latchkey` command. Sources are TypeScript; load-ts.mjs compiles them (cached, rebuilt when a
// source changes) so the CLI and `npm start` always run the code in the tree, with no build step.
import { fileURLToPath } from 'node:url';
import { importTs } from './load-ts.mjs';

await importTs(fileURLToPath(new URL('../src/cli.ts', import.meta.url)));
