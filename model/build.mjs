#!/usr/bin/env node
// Builds ml.bundle.js from a model project (docs/model-spec.md) and writes the store layout (docs/store.md):
//
//   <out>/bundles/<sha256>.js   the bundle (immutable, content-addressed)
//   <out>/version.json          the manifest, written last (temp file + rename)
//
// usage: npm run build -- <model dir> <out dir> [--version LABEL] [--name NAME] [--kernel K] [--no-minify]
//
// --kernel pins the fast path: auto (default: the fastest that applies), dense-unrolled (generated straight-line
// code, small Dense stacks), dense-js (loops over typed arrays, any Dense stack), tfjs-cpu (TF.js itself).
//
// The model dir holds model.json + weight shards (a TF.js layers or graph model), spec.json (typed inputs,
// pre-processing, output kind, selfTest, samples) or a legacy app.json (contract 1), and optionally the
// spec's hooks module. Before anything is written, the bundle is evaluated in a fresh node:vm context and
// checked (model/src/checks.mjs): spec, widths, records, hooks, training/serving skew, self-test. Any failure
// is one line `build: ...` on stderr, exit status 2, and no store (BUILD_DEBUG=1 adds the JavaScript stack of a
// failing check). On success it prints a report: kernel, features, self-test and skew deltas. The same inputs
// and lockfile give byte-identical bundles; only version.json's `created` changes (set SOURCE_DATE_EPOCH to pin
// it).
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, realpathSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { normalizeSpec, specFromApp, SpecError } from './src/spec.js';
import { CheckError, checkBundle, formatReport } from './src/checks.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));

class BuildFailure extends Error {}

function fail(message) {
  throw new BuildFailure(message);
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

// spec.json, or a legacy app.json translated to a spec: {spec, file}.
function readSpec(modelDir) {
  const specPath = join(modelDir, 'spec.json');
  if (existsSync(specPath)) return { spec: readJson(specPath, 'spec.json'), file: 'spec.json' };
  const appPath = join(modelDir, 'app.json');
  if (!existsSync(appPath)) fail(`spec.json not found in ${modelDir} (nor a legacy app.json)`);
  const app = readJson(appPath, 'app.json');
  checkApp(app, appPath);
  try {
    return { spec: specFromApp(app), file: 'app.json' };
  } catch (e) {
    if (e instanceof SpecError) fail(`${appPath}: ${e.message}`);
    throw e;
  }
}

function readModel(modelDir) {
  const path = join(modelDir, 'model.json');
  const modelJson = readJson(path, 'TF.js model.json');
  const graph = modelJson.format === 'graph-model';
  if (!modelJson.modelTopology || !Array.isArray(modelJson.weightsManifest)) {
    fail(`${path} is not a TF.js ${graph ? 'graph' : 'layers'} model (needs modelTopology and weightsManifest)`);
  }
  const weightSpecs = [];
  const shards = [];
  for (const group of modelJson.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) {
      const shard = join(modelDir, p);
      if (!existsSync(shard)) fail(`weight shard ${p} named in ${path} not found: ${shard}`);
      shards.push(readFileSync(shard));
    }
  }
  const { weightsManifest, ...rest } = modelJson;
  return {
    graph,
    artifacts: graph ? rest : { modelTopology: modelJson.modelTopology },
    weightSpecs,
    weights: Buffer.concat(shards).toString('base64'),
  };
}

async function bundle(modelDir, spec, model, minify) {
  const generated = 'export default ' + JSON.stringify({
    format: model.graph ? 'graph-model' : 'layers-model',
    artifacts: model.artifacts,
    weightSpecs: model.weightSpecs,
    weights: model.weights,
    spec,
  }) + ';\n';
  let hooksPath = null;
  if (spec.hooks) {
    hooksPath = resolve(modelDir, spec.hooks);
    if (!existsSync(hooksPath)) fail(`hooks module ${spec.hooks} named in the spec not found: ${hooksPath}`);
  }
  const virtual = {
    name: 'tf-on-flink',
    setup(b) {
      b.onResolve({ filter: /^tf-on-flink:(model|hooks)$/ }, (a) => ({ path: a.path.slice(12), namespace: 'tf-on-flink' }));
      b.onResolve({ filter: /^tf-on-flink:loader$/ }, () => ({
        path: join(HERE, 'src', model.graph ? 'graph.js' : 'layers.js'),
      }));
      b.onLoad({ filter: /^model$/, namespace: 'tf-on-flink' }, () => ({ contents: generated, loader: 'js' }));
      // The user's module as one default-exported namespace: app.js reads prepare/finish off it at run time.
      b.onLoad({ filter: /^hooks$/, namespace: 'tf-on-flink' }, () => (hooksPath
        ? { contents: `import * as hooks from ${JSON.stringify(hooksPath)};\nexport default hooks;\n`,
          loader: 'js', resolveDir: dirname(hooksPath) }
        : { contents: 'export default {};\n', loader: 'js' }));
    },
  };
  let result;
  try {
    result = await esbuild.build({
      entryPoints: [join(HERE, 'src', 'app.js')],
      absWorkingDir: HERE,
      bundle: true,
      format: 'iife',
      // 'browser' makes esbuild honour the packages' "browser" maps, which drop TF.js' Node-only modules.
      platform: 'browser',
      target: 'es2020',
      minify,
      write: false,
      legalComments: 'eof',
      logLevel: 'silent',
      // The hooks' own npm packages, installed in the model project.
      nodePaths: [join(resolve(modelDir), 'node_modules')],
      // TF.js looks for a global object through `self` before any of our code runs.
      banner: { js: 'var self = globalThis;' },
      define: { 'process.env.NODE_ENV': '"production"' },
      plugins: [virtual],
    });
  } catch (e) {
    const first = e.errors && e.errors[0];
    if (!first) throw e;
    const where = first.location ? `${first.location.file}:${first.location.line}:${first.location.column}: ` : '';
    fail(`bundling failed: ${where}${first.text}`);
  }
  for (const w of result.warnings) {
    const where = w.location ? `${relative(HERE, resolve(HERE, w.location.file))}:${w.location.line}: ` : '';
    process.stderr.write(`build: warning: ${where}${w.text}\n`);
  }
  return Buffer.from(result.outputFiles[0].contents);
}

export async function build(modelDir, outDir, { version, name, kernel, minify = true } = {}) {
  const { spec, file } = readSpec(modelDir);
  if (version) spec.version = version;
  if (name) spec.name = name;
  if (kernel) spec.kernel = kernel;
  if (spec.version === undefined || spec.version === null || spec.version === '') {
    fail(`no version label: pass --version or set "version" in ${file}`);
  }
  let normalized;
  try {
    normalized = normalizeSpec(spec);
  } catch (e) {
    if (e instanceof SpecError) fail(`${file}: ${e.message}`);
    throw e;
  }
  const model = readModel(modelDir);
  const bytes = await bundle(modelDir, spec, model, minify);
  let report;
  try {
    report = await checkBundle(bytes.toString('utf8'), normalized, spec);
  } catch (e) {
    if (e instanceof CheckError) fail(e.message);
    throw e;
  }
  // Only a bundle that passed every check reaches the store.
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const key = `bundles/${sha256}.js`;
  mkdirSync(join(outDir, 'bundles'), { recursive: true });
  const bundlePath = join(outDir, key);
  writeAtomic(bundlePath, bytes);
  const epoch = process.env.SOURCE_DATE_EPOCH;
  const created = (epoch ? new Date(Number(epoch) * 1000) : new Date()).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const manifest = {
    format: 1,
    model: normalized.name,
    version: String(spec.version),
    bundle: key,
    sha256,
    size: bytes.length,
    created,
  };
  writeAtomic(join(outDir, 'version.json'), Buffer.from(JSON.stringify(manifest, null, 2) + '\n'));
  return { manifest, bundlePath, report };
}

function writeAtomic(path, bytes) {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, bytes, { flush: true });
  renameSync(tmp, path);
}

// Compared as real paths: a checkout reached through a symlink must still build.
if (process.argv[1] && realpathSync(resolve(process.argv[1])) === realpathSync(fileURLToPath(import.meta.url))) {
  try {
    const opts = parseArgs(process.argv.slice(2));
    if (opts.help || opts.positional.length !== 2) {
      process.stdout.write('usage: npm run build -- <model dir> <out dir> [--version LABEL] [--name NAME] ' +
        '[--kernel auto|dense-unrolled|dense-js|tfjs-cpu] [--no-minify]\n');
      process.exit(opts.help ? 0 : 2);
    }
    const [modelDir, outDir] = opts.positional;
    const { manifest, bundlePath, report } = await build(modelDir, outDir, opts);
    process.stdout.write(`${bundlePath} (${manifest.size} bytes) model=${manifest.model} ` +
      `version=${manifest.version} sha256=${manifest.sha256}\n${formatReport(report)}\n`);
  } catch (e) {
    if (!(e instanceof BuildFailure)) throw e;
    process.stderr.write(`build: ${e.message.replace(/\s*\n\s*/g, ' ')}\n`);
    process.exit(2);
  }
}
