// Runs a TypeScript entry point of this repository as plain JavaScript: esbuild compiles it, with
// every source of ours it imports, into ES modules (dependencies stay imports from node_modules),
// and the entry's module is imported. A source the entry imports dynamically (`await import(...)`:
// one command of the CLI, one kind of benchmark server) goes into a chunk of its own, loaded only
// when that import runs, with only its own dependencies: `latchkey api` never loads oidc-provider.
// The build is cached beside the dependencies and rebuilt whenever a source it was built from
// changes, so what runs is always the code in the tree, with no build step to forget. Compared
// with compiling on load (tsx), a running server carries no TypeScript loader: on Node 20 that
// loader is a thread with a V8 heap of its own, about 30 MB of resident memory.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cacheDir = path.join(root, 'node_modules', '.cache', 'latchkey');

/** Imports `entry` (a .ts file of this repository), compiling it first when its bundle is stale. */
export async function importTs(entry) {
  const file = path.resolve(entry);
  const id = createHash('sha256').update(file).digest('hex').slice(0, 12);
  const outdir = path.join(cacheDir, `${path.basename(file, '.ts')}-${id}`);
  const bundle = path.join(outdir, 'entry.mjs');
  let url;
  try {
    if (!isFresh(bundle)) await build(file, outdir, bundle);
    url = pathToFileURL(bundle).href;
  } catch (err) {
    // No esbuild, or nowhere to write (a read-only install): compile on load instead.
    if (process.env.LATCHKEY_DEBUG_LOADER) process.stderr.write(`load-ts: ${err.stack}\n`);
    const { register } = await import('tsx/esm/api');
    register();
    url = pathToFileURL(file).href;
  }
  return import(url);
}

/** The manifest written beside the bundle by the last build, if any. */
function readManifest(bundle) {
  try {
    return JSON.parse(readFileSync(`${bundle}.json`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** The bundle exists and every source it was built from is unchanged (size and mtime). */
function isFresh(bundle) {
  const manifest = readManifest(bundle);
  if (!manifest || !existsSync(bundle)) return false;
  return Object.entries(manifest.inputs).every(([file, stamp]) => {
    try {
      return stampOf(file) === stamp;
    } catch {
      return false;
    }
  });
}

const stampOf = (file) => {
  const s = statSync(file);
  return `${s.size}:${s.mtimeMs}`;
};

async function build(entry, outdir, bundle) {
  const esbuild = await import('esbuild');
  try {
    const result = await esbuild.build({
      entryPoints: { entry },
      absWorkingDir: root,
      outdir,
      outExtension: { '.js': '.mjs' },
      // Chunks are named by their content: a rebuild adds new ones beside those a running
      // process may still import, and replaces only the entry.
      splitting: true,
      chunkNames: 'chunk-[hash]',
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: `node${process.versions.node}`,
      packages: 'external',
      // Mapped stack traces with `node --enable-source-maps`; otherwise the map is never read.
      sourcemap: 'linked',
      metafile: true,
      write: false,
      logLevel: 'silent',
      plugins: [ownImportMetaUrl],
    });
    mkdirSync(outdir, { recursive: true });
    // Written under a name of this process's own, then renamed, the manifest last: processes
    // starting together each see either no build or a whole one.
    for (const output of result.outputFiles) {
      const temporary = `${output.path}.${process.pid}`;
      writeFileSync(temporary, output.contents);
      renameSync(temporary, output.path);
    }
    // This file too: a change to how bundles are built rebuilds them.
    const files = [...Object.keys(result.metafile.inputs).map((input) => path.resolve(root, input)), fileURLToPath(import.meta.url)];
    const inputs = Object.fromEntries(files.map((file) => [file, stampOf(file)]));
    const outputs = result.outputFiles.map((output) => path.basename(output.path));
    const previous = readManifest(bundle)?.outputs ?? [];
    const manifest = `${bundle}.json.${process.pid}`;
    writeFileSync(manifest, JSON.stringify({ inputs, outputs }));
    renameSync(manifest, `${bundle}.json`);
    removeOlderBuilds(outdir, new Set([...outputs, ...previous, `${path.basename(bundle)}.json`]));
  } finally {
    // esbuild's compiler runs as a child process; it is not needed again.
    await esbuild.stop();
  }
}

/**
 * Removes the chunks of builds before the previous one: a process that started from the previous
 * entry may still be importing its chunks, one that started from an older one has long finished.
 * A file written in the last minute stays too (another process building at this very moment).
 */
function removeOlderBuilds(outdir, keep) {
  const minuteAgo = Date.now() - 60_000;
  for (const name of readdirSync(outdir)) {
    if (keep.has(name)) continue;
    const file = path.join(outdir, name);
    try {
      if (statSync(file).mtimeMs < minuteAgo) rmSync(file, { force: true });
    } catch {
      // Gone already, or not ours to remove: it only takes space.
    }
  }
}

// In one bundle every module would share the bundle's import.meta.url; each source keeps its own,
// so paths computed from it (the project root, the views) stay what they are in the tree.
const ownImportMetaUrl = {
  name: 'own-import-meta-url',
  setup(build) {
    build.onLoad({ filter: /\.ts$/ }, (args) => ({
      contents: readFileSync(args.path, 'utf8').replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href)),
      loader: 'ts',
    }));
  },
};
