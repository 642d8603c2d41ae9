// The app template: TF.js runtime + the model + the spec's pre-processing, hooks and output kind, exposed as
// the `ml` global. Contract 2 (docs/model-spec.md, "Contract 2": typed columns in, scores out); when every raw
// input is a number, also contract 1 (docs/bundle-contract.md: float32 rows in, scores out).
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import MODEL from 'tf-on-flink:model';
import HOOKS from 'tf-on-flink:hooks';
import { loadModel } from 'tf-on-flink:loader';
import { base64Decode, v8Platform } from './platform.js';
import * as kernels from './kernels.js';
import { normalizeSpec } from './spec.js';
import { compileFeatures } from './features.js';
import { Batch } from './batch.js';
import { compileScale, decodeOutput, outputProblem } from './outputs.js';

tf.setPlatform('v8', v8Platform);

const spec = normalizeSpec(MODEL.spec);
const compiled = compileFeatures(spec);
const output = spec.output;
const nOut = output.width;
const W = spec.width;
const raw = spec.raw;
const numericRaw = raw.filter((x) => x.type !== 'string');
const stringRaw = raw.filter((x) => x.type === 'string');
const floatExtras = spec.extras.filter((e) => e.type === 'float');
const stringExtras = spec.extras.filter((e) => e.type === 'string');
const scale = compileScale(output);
const prepareHook = HOOKS.prepare;
const finishHook = HOOKS.finish;
// Contract 1 carries float32 rows: numbers only, and no timestamps (float32 keeps them to ~2 minutes).
const contract1 = raw.every((x) => x.type === 'float' || x.type === 'int' || x.type === 'bool');
// The contract-1 model exactly (float inputs, each at most standardized, no hooks): its fast path keeps the
// generated kernel with the standardization fused in.
const fused = contract1 && !spec.derived.length && !prepareHook && !finishHook && !scale &&
  spec.blocks.length === raw.length &&
  spec.blocks.every((b, i) => b.input === raw[i].name && raw[i].type === 'float' && !raw[i].nullable &&
    (b.steps.length === 0 || (b.steps.length === 1 && b.steps[0].op === 'standardize')))
  ? {
    mean: spec.blocks.map((b) => (b.steps.length ? b.steps[0].mean : 0)),
    std: spec.blocks.map((b) => (b.steps.length ? b.steps[0].std : 1)),
  }
  : null;

const KERNELS = ['auto', 'dense-unrolled', 'dense-js', 'tfjs-cpu'];
let net = null; // {kind, model, inputWidth, outputWidths, run}
let plan = null;
let unrolled = null; // generated kernel over the features
let kernel = 'not initialised';
let kernelReason = '';

// Thrown for records the bundle cannot use (contract 1); the host maps it to its own InputError.
class InputError extends Error {
  constructor(message) {
    super(message);
    this.name = 'InputError';
  }
}

function requireInit() {
  if (net === null) throw new Error('ml.init() has not completed');
}

function checkHooks() {
  for (const [name, fn] of [['prepare', prepareHook], ['finish', finishHook]]) {
    if (fn !== undefined && typeof fn !== 'function') throw new Error(`hooks: export ${name} is not a function`);
  }
  if (spec.derived.length && !prepareHook) {
    throw new Error(`hooks: the derived input(s) ${spec.derived.map((d) => "'" + d.name + "'").join(', ')} ` +
      'need a prepare hook, and the hooks module exports none');
  }
  if (spec.extras.length && !finishHook) {
    throw new Error(`hooks: the extras ${spec.extras.map((e) => "'" + e.name + "'").join(', ')} ` +
      'need a finish hook, and the hooks module exports none');
  }
}

function choosePlan(want) {
  if (net.kind === 'graph') return { plan: null, reason: 'graph model: the generated kernels cover layers models' };
  if (want === 'tfjs-cpu') return { plan: null, reason: 'pinned by the build (--kernel tfjs-cpu)' };
  return kernels.planModel(net.model);
}

// forward(features, out, n) for up to `rows` rows: the chosen kernel over the feature matrix.
function makeForward(rows) {
  if (unrolled) return unrolled;
  if (plan) return kernels.compileDenseStack(plan, rows);
  return (x, y, n) => {
    if (n > 0) net.run(x, n, W, y);
  };
}

// The whole batch after its columns are loaded: inputs, prepare, features, model, scale, finish. Writes the
// scores to `out` (0 for error rows) and returns finish's extras (or null).
function runBatch(batch, forward, out) {
  const n = batch.n;
  const features = batch.featurize(prepareHook);
  forward(features, out, n);
  if (scale) scale(out, n);
  const extras = batch.finish(finishHook, out, nOut, output.columns);
  const status = batch.status;
  for (let i = 0; i < n; i++) if (status[i] !== 0) out.fill(0, i * nOut, (i + 1) * nOut);
  return extras;
}

// ---- contract 2: columns --------------------------------------------------------------------------------------

let colRows = 0;
let colBuffers = null; // [num, valid, offsets, status, out, extra, bytes_0, ...]
let colViews = null; // {num: [], valid: [], offsets: [], bytes: []} as Batch.loadColumns reads them
let colBatch = null;
let colOut = null;
let colExtra = null;
let colForward = null;
let lastStrings = {};
const retired = []; // buffers replaced by reserve(): the host may still hold views of them

function columns(rows) {
  requireInit();
  if (!(Number.isInteger(rows) && rows > 0 && rows <= ml.meta.maxBatch)) {
    throw new Error('columns(rows): rows must be an integer in 1..' + ml.meta.maxBatch);
  }
  if (rows === colRows) return colBuffers;
  if (colBuffers) retired.push(colBuffers);
  // Never an empty buffer: mini-racer cannot hand the host a view of a zero-length ArrayBuffer.
  const alloc = (bytes) => new ArrayBuffer(Math.max(8, bytes));
  const num = alloc(numericRaw.length * rows * 8);
  const valid = alloc(raw.length * rows);
  const offsets = alloc(stringRaw.length * (rows + 1) * 4);
  const status = alloc(rows);
  const out = alloc(rows * nOut * 4);
  const extra = alloc(floatExtras.length * rows * 8);
  const bytes = stringRaw.map(() => alloc(rows * 32));
  colViews = {
    num: numericRaw.map((_, k) => new Float64Array(num, k * rows * 8, rows)),
    valid: raw.map((_, j) => new Uint8Array(valid, j * rows, rows)),
    offsets: stringRaw.map((_, k) => new Int32Array(offsets, k * (rows + 1) * 4, rows + 1)),
    bytes: bytes.map((b) => new Uint8Array(b)),
  };
  colBatch = new Batch(spec, compiled, rows);
  colBatch.status = new Uint8Array(status);
  colOut = new Float32Array(out);
  colExtra = new Float64Array(extra);
  colForward = makeForward(rows);
  colBuffers = [num, valid, offsets, status, out, extra, ...bytes];
  colRows = rows;
  return colBuffers;
}

function reserve(k, nbytes) {
  if (colBuffers === null) throw new Error('call ml.columns(rows) before ml.reserve(k, nbytes)');
  if (!(Number.isInteger(k) && k >= 0 && k < stringRaw.length)) {
    throw new Error(`reserve(k, nbytes): k must be an integer in 0..${stringRaw.length - 1} (the string inputs)`);
  }
  if (!(Number.isInteger(nbytes) && nbytes >= 0 && nbytes <= 0x7fffffff)) {
    throw new Error('reserve(k, nbytes): nbytes must be an integer in 0..2^31-1');
  }
  const old = colBuffers[6 + k];
  if (old.byteLength >= nbytes) return old;
  const grown = new ArrayBuffer(Math.min(0x7fffffff, Math.max(nbytes, old.byteLength * 2)));
  retired.push(old);
  colBuffers[6 + k] = grown;
  colViews.bytes[k] = new Uint8Array(grown);
  return grown;
}

function predictColumns(n) {
  if (colBatch === null) throw new Error('call ml.columns(rows) before ml.predictColumns(n)');
  if (!(Number.isInteger(n) && n >= 0 && n <= colRows)) {
    throw new Error('predictColumns(n): n must be an integer in 0..' + colRows);
  }
  colBatch.loadColumns(colViews, n);
  const extras = runBatch(colBatch, colForward, colOut);
  lastStrings = {};
  if (extras) {
    floatExtras.forEach((e, k) => {
      const src = extras[e.name];
      const base = k * colRows;
      for (let i = 0; i < n; i++) {
        const v = src[i];
        colExtra[base + i] = typeof v === 'number' ? v : NaN;
      }
    });
    for (const e of stringExtras) {
      const src = extras[e.name];
      const col = new Array(n);
      for (let i = 0; i < n; i++) col[i] = typeof src[i] === 'string' ? src[i] : src[i] == null ? null : String(src[i]);
      lastStrings[e.name] = col;
    }
  }
  return colBatch.errors.length;
}

// ---- contract 1: float32 rows -------------------------------------------------------------------------------

let rowRows = 0;
let rowBuffers = null;
let rowIn = null;
let rowOutput = null;
let rowBatch = null;
let rowForward = null;
let fusedForward = null;

function buffers(rows) {
  requireInit();
  if (!(Number.isInteger(rows) && rows > 0 && rows <= ml.meta.maxBatch)) {
    throw new Error('buffers(rows): rows must be an integer in 1..' + ml.meta.maxBatch);
  }
  if (rows !== rowRows) {
    if (rowBuffers) retired.push(rowBuffers);
    rowBuffers = [new ArrayBuffer(rows * raw.length * 4), new ArrayBuffer(rows * nOut * 4)];
    rowIn = new Float32Array(rowBuffers[0]);
    rowOutput = new Float32Array(rowBuffers[1]);
    rowBatch = new Batch(spec, compiled, rows);
    rowForward = makeForward(rows);
    rowRows = rows;
  }
  return rowBuffers;
}

function predictBuffer(n) {
  if (rowBatch === null) throw new Error('call ml.buffers(rows) before ml.predictBuffer(n)');
  if (!(Number.isInteger(n) && n >= 0 && n <= rowRows)) {
    throw new Error('predictBuffer(n): n must be an integer in 0..' + rowRows);
  }
  if (fusedForward !== null) {
    // A null or infinite value makes the sum non-finite (so may a huge sum of finite values): only then does
    // the batch go the general way, which names the row. A sum costs less than a test per value (measured).
    const x = rowIn;
    let sum = 0;
    for (let j = 0, end = n * raw.length; j < end; j++) sum += x[j];
    if (sum - sum === 0) {
      fusedForward(rowIn, rowOutput, n);
      return n * nOut;
    }
  }
  rowBatch.loadRows(rowIn, n);
  runBatch(rowBatch, rowForward, rowOutput);
  if (rowBatch.errors.length) {
    const [row, message] = rowBatch.rowErrors()[0];
    throw new InputError(`record ${row}: ${message}`);
  }
  return n * nOut;
}

// ---- JSON path: TF.js itself ----------------------------------------------------------------------------------

// Contract 1's JSON path: a record that is not all numbers is refused by a throw, and the values are float32
// (as the rows of its fast path).
function legacyRecords(records) {
  return records.map((rec, r) => raw.map((input, i) => {
    const v = Array.isArray(rec) ? rec[i] : rec === null || typeof rec !== 'object' ? undefined : rec[input.name];
    if (typeof v !== 'number') {
      throw new InputError(`record ${r}: feature "${input.name}" is ${v === undefined ? 'missing' : 'not a number'}`);
    }
    return Math.fround(v);
  }));
}

function loaded(records) {
  if (!Array.isArray(records)) throw new InputError('records must be an array');
  const batch = new Batch(spec, compiled, Math.max(1, records.length));
  batch.loadRecords(records);
  return batch;
}

function predict(records) {
  requireInit();
  const batch = loaded(spec.legacy && Array.isArray(records) ? legacyRecords(records) : records);
  const n = batch.n;
  const scores = new Float32Array(n * nOut);
  const extras = runBatch(batch, (x, y, m) => m > 0 && net.run(x, m, W, y), scores);
  const results = new Array(n);
  for (let r = 0; r < n; r++) {
    const row = Array.from(scores.subarray(r * nOut, (r + 1) * nOut));
    if (batch.status[r] !== 0) {
      results[r] = { scores: row, error: batch.errors.find((e) => e[0] === r)[1] };
      continue;
    }
    const result = { scores: row, ...decodeOutput(output, scores, r * nOut) };
    if (extras) {
      for (const e of spec.extras) {
        const v = extras[e.name][r];
        result[e.name] = e.type === 'float' ? (typeof v === 'number' && v === v ? v : null)
          : typeof v === 'string' ? v : v == null ? null : String(v);
      }
    }
    results[r] = result;
  }
  if (spec.legacy && batch.errors.length) {
    const [row, message] = batch.rowErrors()[0];
    throw new InputError(`record ${row}: ${message}`);
  }
  return results;
}

function features(records) {
  requireInit();
  const batch = loaded(records);
  const f = batch.featurize(prepareHook);
  const rows = new Array(batch.n);
  for (let r = 0; r < batch.n; r++) rows[r] = batch.status[r] !== 0 ? null : Array.from(f.subarray(r * W, (r + 1) * W));
  return { names: spec.featureNames.slice(), rows, errors: batch.rowErrors() };
}

// ---- the global ------------------------------------------------------------------------------------------------

function selfTestBlock() {
  const st = MODEL.spec.selfTest;
  const block = { records: st.records, expected: st.expected, tolerance: st.tolerance };
  if (contract1) {
    // Contract 1's hosts read raw rows: given when every record's values are numbers (or booleans).
    const rows = st.records.map((rec) => raw.map((x) => {
      const v = rec[x.name];
      return typeof v === 'boolean' && x.type === 'bool' ? (v ? 1 : 0) : v;
    }));
    if (rows.every((row) => row.every((v) => typeof v === 'number'))) block.inputs = rows;
  }
  return block;
}

const schema = {
  inputs: raw.map((x) => ({ name: x.name, type: x.type, nullable: x.nullable })),
  derived: spec.derived.map((x) => x.name),
  features: spec.featureNames.slice(),
  output,
  extras: spec.extras,
};

const ml = {
  meta: Object.freeze({
    name: spec.name,
    version: spec.version,
    inputs: Object.freeze(raw.map((x) => x.name)),
    outputs: Object.freeze((spec.legacy ? spec.legacy.outputs : output.columns).slice()),
    ...(spec.legacy || output.kind === 'multiclass'
      ? { labels: Object.freeze((spec.legacy ? spec.legacy.labels : output.labels).slice()) }
      : {}),
    maxBatch: spec.maxBatch,
    runtime: 'tfjs-core ' + tf.version_core,
    // A legacy app.json keeps contract 1 for the host (float32 rows, predictBuffer): its fast path and its
    // failure modes stay those of before. It carries contract 2's functions and schema all the same.
    contract: spec.legacy ? 1 : 2,
    schema,
  }),

  // `options.kernel` overrides the pinned kernel: for the build's checks of a bundle whose pin does not apply.
  async init(options) {
    checkHooks();
    await tf.setBackend('cpu');
    await tf.ready();
    const loadedNet = await loadModel(MODEL, base64Decode(MODEL.weights).buffer);
    if (loadedNet.inputWidth !== W) {
      const blocks = spec.blocks.map((b) => `${b.name}: ${b.width}`).join(', ');
      throw new Error(`the features make ${W} columns (${blocks}), but the model takes ${loadedNet.inputWidth}`);
    }
    const problem = outputProblem(output, loadedNet.outputWidths);
    if (problem) throw new Error(problem);
    net = loadedNet;
    // spec.kernel (build option --kernel) pins the fast path's kernel; 'auto' takes the fastest that applies.
    const want = (options && options.kernel) || spec.kernel || 'auto';
    if (!KERNELS.includes(want)) throw new Error('unknown kernel "' + want + '"; known: ' + KERNELS.join(', '));
    ({ plan, reason: kernelReason } = choosePlan(want));
    const generate = plan && (want === 'auto' || want === 'dense-unrolled');
    unrolled = generate ? kernels.compileUnrolled(plan, null) : null;
    fusedForward = generate && fused ? kernels.compileUnrolled(plan, fused) : null;
    kernel = unrolled ? 'dense-unrolled' : plan ? 'dense-js' : 'tfjs-cpu';
    if (want !== 'auto' && want !== kernel) {
      net = null;
      throw new Error('kernel "' + want + '" does not apply to this model (it would run ' + kernel + ')');
    }
    return { kernel };
  },

  columns,
  reserve,
  predictColumns,
  rowErrors: () => (colBatch ? colBatch.rowErrors() : []),
  extraStrings: () => lastStrings,
  predict,
  features,
  selfTest: selfTestBlock(),
  samples: MODEL.spec.samples || null,
  get kernel() {
    return kernel;
  },
  get kernelReason() {
    return kernelReason;
  },
};

if (contract1) {
  ml.buffers = buffers;
  ml.predictBuffer = predictBuffer;
}

globalThis.ml = ml;
