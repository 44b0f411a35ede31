import { describe, expect, it } from 'vitest';
import { oldGenerationGrowth } from './fixture-command.ts';
import { POSTGRES_URL, postgresAvailable } from './harness.ts';

/** Bytes the old generation grew by while the fixture sent 2,000 named statements, four callers at a time, each in a context of its own. */
const growth = (mode: 'pg-promise' | 'statements'): number => oldGenerationGrowth('pg-statement-promotion.ts', [mode, POSTGRES_URL]);

// src/db/pg-statements.ts: statements go through pg's callback, not the promise pg's client.query returns.
describe.skipIf(!(await postgresAvailable()))('named statements on PostgreSQL', () => {
  it("leave what their callers hold in the young generation while they wait, under an AsyncLocalStorage", () => {
    // The premise: awaiting pg's own promise, the callers' objects went to the old generation.
    expect(growth('pg-promise')).toBeGreaterThan(1_500_000);
    expect(growth('statements')).toBeLessThan(1_000_000);
  });
});
