export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'silent';
const order: Record<LogLevel, number> = { silent: 0, error: 1, warn: 2, info: 3, debug: 4 };

export interface Logger {
  error(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
  /** Whether lines at `level` are written: skip building what would be thrown away. */
  enabled(level: Exclude<LogLevel, 'silent'>): boolean;
}

/**
 * One JSON line per event on stderr. Callers pass identifiers (client ids, request ids, key
 * prefixes), never credentials: nothing here can tell a secret from an id, so none is ever passed.
 */
export function createLogger(
  level: LogLevel = 'info',
  base: Record<string, unknown> = {},
  write: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): Logger {
  const emit = (lvl: Exclude<LogLevel, 'silent'>) => (msg: string, fields: Record<string, unknown> = {}) => {
    if (order[lvl] > order[level]) return;
    write(JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...base, ...fields }));
  };
  return {
    error: emit('error'),
    warn: emit('warn'),
    info: emit('info'),
    debug: emit('debug'),
    child: (fields) => createLogger(level, { ...base, ...fields }, write),
    enabled: (lvl) => order[lvl] <= order[level],
  };
}
