import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fullCollections = (...args: string[]): number => {
  const out = execFileSync(process.execPath, [path.join(root, 'bin', 'run-ts.mjs'), path.join(root, 'test', 'fixtures', 'pretenuring.ts'), ...args], { encoding: 'utf8' });
  return (JSON.parse(out.trim()) as { full: number }).full;
};

// src/http/gc-tuning.ts, which `latchkey serve` and `latchkey api` call before they listen.
describe('garbage collector tuning for serving', () => {
  it('keeps short-lived objects out of the old generation once their allocation site looked long-lived', () => {
    // The premise: without the tuning, V8 pretenures the site and the short-lived objects fill
    // the old generation, which takes a full collection.
    expect(fullCollections()).toBeGreaterThan(0);
    expect(fullCollections('tuned')).toBe(0);
  });
});
