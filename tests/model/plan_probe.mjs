// Runs model/src/kernels.js in Node on model directories (TF.js layers model + app.json + reference.json), outside
// any bundle: what planModel says about each model, and with --outputs what both generated kernels compute on the
// reference inputs, with BatchNormalization folded (the default) and kept as separate steps.
//
//   node tests/model/plan_probe.mjs [--outputs] <model dir>...   -> one JSON object per line
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const MODEL = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'model');
const require = createRequire(join(MODEL, 'package.json'));
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const { loadLayersModel } = require('@tensorflow/tfjs-layers');
const { planModel, describePlan, compileDenseStack, compileUnrolled } = await import(
  pathToFileURL(join(MODEL, 'src', 'kernels.js')).href
);

async function load(dir) {
  const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
  const weightSpecs = [];
  const shards = [];
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) shards.push(readFileSync(join(dir, p)));
  }
  const weightData = new Uint8Array(Buffer.concat(shards)).buffer;
  return loadLayersModel(tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs, weightData }));
}

function run(plan, app, inputs) {
  const nIn = plan[0].inSize;
  const nOut = plan[plan.length - 1].outSize;
  const n = inputs.length;
  const raw = Float32Array.from(inputs.flat());
  const std = app.preprocess && app.preprocess.standardize;
  const prepared = new Float32Array(n * nIn);
  for (let j = 0; j < n * nIn; j++) {
    const i = j % nIn;
    prepared[j] = std ? (raw[j] - std.mean[i]) / std.std[i] : raw[j];
  }
  const out = {};
  const js = new Float32Array(n * nOut);
  compileDenseStack(plan, n)(prepared, js, n);
  out['dense-js'] = Array.from(js);
  const unrolled = compileUnrolled(plan, std || null);
  if (unrolled) {
    const y = new Float32Array(n * nOut);
    unrolled(raw, y, n);
    out['dense-unrolled'] = Array.from(y);
  }
  return out;
}

tf.setBackend('cpu');
const args = process.argv.slice(2);
const outputs = args.includes('--outputs');
for (const dir of args.filter((a) => !a.startsWith('--'))) {
  const model = await load(dir);
  const { plan, reason } = planModel(model);
  const line = { dir, reason, plan: plan && describePlan(plan), layers: plan && plan.map((s) => s.layers) };
  if (outputs && plan) {
    const app = JSON.parse(readFileSync(join(dir, 'app.json'), 'utf8'));
    const { inputs } = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
    const separate = planModel(model, { fold: false }).plan;
    line.outputs = { fold: run(plan, app, inputs), separate: run(separate, app, inputs) };
  }
  process.stdout.write(JSON.stringify(line) + '\n');
}
