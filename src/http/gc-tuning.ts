import os from 'node:os';
import v8 from 'node:v8';

/**
 * Tunes V8's garbage collector for a process that serves requests: the commands that serve
 * (`latchkey serve`, `latchkey api`) call this before they start. Both switches are set at run
 * time, before the server starts, and take effect (test/gc-tuning.test.ts).
 *
 * Allocation-site pretenuring, off. Pretenuring allocates an object straight into the old
 * generation when most objects from the same place in the code survived their first
 * young-generation collection. A server's objects live for one request, but while many requests
 * are in flight (a burst, a wait on PostgreSQL) the request-handling sites look long-lived, and V8
 * went on allocating there in the old generation after the burst: at 1,700 client_credentials
 * grants a second on PostgreSQL, 6.3 MB/s, a full collection every 3 s and a 30-40 ms pause each
 * time (p99 17-44 ms). Without pretenuring the same run promoted 0.26 MB/s, with no full
 * collection (p99 2.7-6.8 ms).
 *
 * Concurrent marking, off where the process may run on one CPU only (taskset, a cpuset, a
 * one-vCPU machine). V8 marks the old generation on a helper thread while JavaScript runs; with no
 * other core to run on, that thread's marking (60-110 ms of it per full collection, V8 reported)
 * is the event loop's time. Introspection on PostgreSQL at half load, pinned to one core, stalled
 * 30-40 ms at each full collection (one every 50-100 s). Without concurrent marking V8 marks in
 * steps on the main thread between requests (the longest 0.2-5 ms), and what remains is the final
 * pause: 4-10 ms, at times up to 23. With more than one CPU the helper thread runs beside the
 * event loop, and V8's default stays.
 *
 * V8's memory reducer stays on, and cannot be switched off here in any case: V8 reads
 * --no-memory-reducer only when the process starts (set later, it changes nothing). See the README
 * (Configuration) for what it costs and what starting Node without it costs.
 */
export function tuneGarbageCollectorForServing(): void {
  v8.setFlagsFromString('--no-allocation-site-pretenuring');
  if (os.availableParallelism() === 1) v8.setFlagsFromString('--no-concurrent-marking');
}
