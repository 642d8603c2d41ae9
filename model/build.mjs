#!/usr/bin/env node
// Builds ml.bundle.js from a TF.js layers model directory and writes the store layout (docs/store.md):
//
//   <out>/bundles/<sha256>.js   the bundle (immutable, content-addressed)
//   <out>/version.json          the manifest, written last (temp file + rename)
//
// usage: npm run build -- <tfjs model dir> <out dir> [--version LABEL] [--name NAME] [--kernel K] [--no-minify]
//
// --kernel pins the fast path: auto (default: the fastest that applies), dense-unrolled (generated straight-line
// code, small Dense stacks), dense-js (loops over typed arrays, any Dense stack), tfjs-cpu (TF.js itself).
//
// The model dir holds model.json + weight shards (tensorflowjs converter output) and app.json (feature names,
// labels, pre-processing constants, selfTest block; written by train.py). The same inputs and lockfile give
// byte-identical bundles; only version.json's `created` changes (set SOURCE_DATE_EPOCH to pin it).
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, realpathSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const HERE = dirname(fileURLToPath(import.meta.url));

function fail(message) {
  process.stderr.write(`build: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { minify: true, positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--version') opts.version = argv[++i];
    else if (a === '--name') opts.name = argv[++i];
    else if (a === '--kernel') opts.kernel = argv[++i];
    else if (a === '--no-minify') opts.minify = false;
    else if (a === '-h' || a === '--help') opts.help = true;
    else if (a.startsWith('--')) fail(`unknown option ${a}`);
    else opts.positional.push(a);
  }
  return opts;
}

function readJson(path, what) {
  if (!existsSync(path)) fail(`${what} not found: ${path}`);
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    fail(`${what} is not valid JSON (${path}): ${e.message}`);
  }
}

function checkApp(app, path) {
  const need = ['name', 'inputs', 'outputs', 'selfTest'];
  for (const key of need) if (!(key in app)) fail(`${path}: missing "${key}"`);
  const st = app.selfTest;
  if (!Array.isArray(st.inputs) || !Array.isArray(st.expected) || st.inputs.length !== st.expected.length ||
    st.inputs.length === 0) {
    fail(`${path}: selfTest needs equal-length, non-empty "inputs" and "expected"`);
  }
  if (!(typeof st.tolerance === 'number' && st.tolerance > 0)) fail(`${path}: selfTest.tolerance must be > 0`);
}

export async function build(modelDir, outDir, { version, name, kernel, minify = true } = {}) {
  const modelJson = readJson(join(modelDir, 'model.json'), 'TF.js model.json');
  const app = readJson(join(modelDir, 'app.json'), 'app.json');
  checkApp(app, join(modelDir, 'app.json'));
  if (version) app.version = version;
  if (name) app.name = name;
  if (kernel) app.kernel = kernel;
  if (!app.version) fail('no version label: pass --version or set "version" in app.json');
  if (!modelJson.modelTopology || !Array.isArray(modelJson.weightsManifest)) {
    fail(`${modelDir}/model.json is not a TF.js layers model (needs modelTopology and weightsManifest)`);
  }
  const weightSpecs = [];
  const shards = [];
  for (const group of modelJson.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) {
      const shard = join(modelDir, p);
      if (!existsSync(shard)) fail(`weight shard ${p} named in ${join(modelDir, 'model.json')} not found: ${shard}`);
      shards.push(readFileSync(shard));
    }
  }
  const weights = Buffer.concat(shards).toString('base64');
  const generated = 'export default ' + JSON.stringify({
    topology: modelJson.modelTopology,
    weightSpecs,
    weights,
    app,
  }) + ';\n';

  const virtualModel = {
    name: 'tf-on-flink-model',
    setup(b) {
      b.onResolve({ filter: /^tf-on-flink:model$/ }, () => ({ path: 'model', namespace: 'tf-on-flink' }));
      b.onLoad({ filter: /.*/, namespace: 'tf-on-flink' }, () => ({ contents: generated, loader: 'js' }));
    },
  };
  const result = await esbuild.build({
    entryPoints: [join(HERE, 'src', 'app.js')],
    bundle: true,
    format: 'iife',
    // 'browser' makes esbuild honour the packages' "browser" maps, which drop TF.js' Node-only modules.
    platform: 'browser',
    target: 'es2020',
    minify,
    write: false,
    legalComments: 'eof',
    logLevel: 'warning',
    // TF.js looks for a global object through `self` before any of our code runs.
    banner: { js: 'var self = globalThis;' },
    define: { 'process.env.NODE_ENV': '"production"' },
    plugins: [virtualModel],
  });
  const bytes = Buffer.from(result.outputFiles[0].contents);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const key = `bundles/${sha256}.js`;
  mkdirSync(join(outDir, 'bundles'), { recursive: true });
  const bundlePath = join(outDir, key);
  writeAtomic(bundlePath, bytes);
  const epoch = process.env.SOURCE_DATE_EPOCH;
  const created = (epoch ? new Date(Number(epoch) * 1000) : new Date()).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const manifest = {
    format: 1,
    model: app.name,
    version: String(app.version),
    bundle: key,
    sha256,
    size: bytes.length,
    created,
  };
  writeAtomic(join(outDir, 'version.json'), Buffer.from(JSON.stringify(manifest, null, 2) + '\n'));
  return { manifest, bundlePath };
}

function writeAtomic(path, bytes) {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, bytes, { flush: true });
  renameSync(tmp, path);
}

// Compared as real paths: a checkout reached through a symlink must still build.
if (process.argv[1] && realpathSync(resolve(process.argv[1])) === realpathSync(fileURLToPath(import.meta.url))) {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.help || opts.positional.length !== 2) {
    process.stdout.write('usage: npm run build -- <tfjs model dir> <out dir> [--version LABEL] [--name NAME] ' +
      '[--kernel auto|dense-unrolled|dense-js|tfjs-cpu] [--no-minify]\n');
    process.exit(opts.help ? 0 : 2);
  }
  const [modelDir, outDir] = opts.positional;
  const { manifest, bundlePath } = await build(modelDir, outDir, opts);
  process.stdout.write(`${bundlePath} (${manifest.size} bytes) model=${manifest.model} ` +
    `version=${manifest.version} sha256=${manifest.sha256}\n`);
}
