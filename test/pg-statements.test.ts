import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { fixtureCommand } from './fixture-command.ts';
import { POSTGRES_URL, postgresAvailable } from './harness.ts';

/** Bytes the old generation grew by while the fixture sent 2,000 named statements, four callers at a time, each in a context of its own. */
const oldGenerationGrowth = (mode: 'pg-promise' | 'statements'): number => {
  const [node, ...rest] = fixtureCommand('pg-statement-promotion.ts', [mode, POSTGRES_URL], ['--expose-gc']);
  const out = execFileSync(node!, rest, { encoding: 'utf8' });
  return (JSON.parse(out.trim().split('\n').at(-1)!) as { grown: number }).grown;
};

// src/db/pg-statements.ts: statements go through pg's callback, not the promise pg's client.query returns.
describe.skipIf(!(await postgresAvailable()))('named statements on PostgreSQL', () => {
  it("leave what their callers hold in the young generation while they wait, under an AsyncLocalStorage", () => {
    // The premise: awaiting pg's own promise, the callers' objects went to the old generation.
    expect(oldGenerationGrowth('pg-promise')).toBeGreaterThan(1_500_000);
    expect(oldGenerationGrowth('statements')).toBeLessThan(1_000_000);
  });
});
