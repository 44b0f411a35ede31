#!/usr/bin/env node
// The `latchkey` command. Sources are TypeScript; tsx compiles them on load so the CLI,
// `npm start` and the tests always run the code in the tree, with no build step to forget.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli.ts');
