import v8 from 'node:v8';

/**
 * Turns off V8's allocation-site pretenuring for this process: the commands that serve requests
 * (`latchkey serve`, `latchkey api`) call this before they start.
 *
 * Pretenuring allocates an object straight into the old generation when most objects from the
 * same place in the code survived their first young-generation collection. A server's objects
 * live for one request, but while many requests are in flight (a burst, a wait on PostgreSQL) the
 * request-handling sites look long-lived, and V8 went on allocating there in the old generation
 * after the burst: at 1,700 client_credentials grants a second on PostgreSQL, 6.3 MB/s, a full
 * collection every 3 s and a 30-40 ms pause each time (p99 17-44 ms). Without pretenuring the same
 * run promoted 0.26 MB/s, with no full collection (p99 2.7-6.8 ms). Set at run time, before the
 * server starts, the flag takes effect (test/gc-tuning.test.ts).
 */
export function tuneGarbageCollectorForServing(): void {
  v8.setFlagsFromString('--no-allocation-site-pretenuring');
}
