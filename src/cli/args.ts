import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A mistake in how a command was called: printed without a stack trace, exit code 2. */
export class UsageError extends Error {}

export type Args = { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] };

export function parse(argv: string[], options: ParseArgsConfig['options']): Args {
  try {
    return parseArgs({ args: argv, options: { json: { type: 'boolean' }, ...options }, allowPositionals: true }) as Args;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

export function required(args: Args, name: string): string {
  const value = args.values[name];
  if (typeof value !== 'string' || value.length === 0) throw new UsageError(`--${name} is required`);
  return value;
}

export function print(args: Args, json: unknown, human: string): void {
  process.stdout.write(args.values.json ? `${JSON.stringify(json, null, 2)}\n` : `${human}\n`);
}

const UNITS = { s: 1, m: 60, h: 3600, d: 86400 } as const;

/** "90d", "12h", "30m", "45s" or plain seconds. */
export function parseDuration(flag: string, value: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(value.trim());
  if (!match) throw new UsageError(`--${flag} ${value} is not a duration (like 90d, 12h, 30m or 3600)`);
  return Number(match[1]) * UNITS[(match[2] || 's') as keyof typeof UNITS];
}
