// The app template: TF.js runtime + the converted layers model + pre-/post-processing, exposed as the `ml`
// global of the bundle contract (docs/bundle-contract.md).
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { loadLayersModel } from '@tensorflow/tfjs-layers';
import MODEL from 'tf-on-flink:model';
import { base64Decode, v8Platform } from './platform.js';
import { compileDenseStack, compileUnrolled, extractDenseStack } from './kernels.js';

tf.setPlatform('v8', v8Platform);

const app = MODEL.app;
const nIn = app.inputs.length;
const nOut = app.outputs.length;
const standardize = app.preprocess && app.preprocess.standardize;
const mean = standardize ? Float64Array.from(standardize.mean) : null;
const std = standardize ? Float64Array.from(standardize.std) : null;
if (standardize && (mean.length !== nIn || std.length !== nIn)) {
  throw new Error('app.json: standardize.mean/std must have one entry per input');
}

const KERNELS = ['auto', 'dense-unrolled', 'dense-js', 'tfjs-cpu'];
let model = null;
let plan = null; // Dense stack extracted from the model, or null
let unrolled = null; // generated straight-line kernel (pre-processing fused), or null
let forward = null; // (raw input, output, n) for the allocated buffers
let kernel = 'not initialised';
let maxRows = 0;
let inputBuffer = null;
let outputBuffer = null;
let input = null;
let output = null;
let prepared = null;

// x (n rows, raw features) -> prepared (float32, what the network was trained on).
function preprocess(x, out, n) {
  const len = n * nIn;
  if (!standardize) {
    for (let j = 0; j < len; j++) out[j] = x[j];
    return;
  }
  for (let r = 0; r < len; r += nIn) {
    // Division, not a multiplication by 1/std: the same rounding as training's (x - mean) / std.
    for (let i = 0; i < nIn; i++) out[r + i] = (x[r + i] - mean[i]) / std[i];
  }
}

function tfjsForward(x, out, n) {
  const result = tf.tidy(() => {
    const t = tf.tensor2d(x.subarray(0, n * nIn), [n, nIn], 'float32');
    return model.predictOnBatch(t);
  });
  try {
    out.set(result.dataSync().subarray(0, n * nOut));
  } finally {
    result.dispose();
  }
}

// Thrown for records the bundle cannot use; the host maps it to its own InputError (not a bundle fault).
class InputError extends Error {
  constructor(message) {
    super(message);
    this.name = 'InputError';
  }
}

function requireInit() {
  if (model === null) throw new Error('ml.init() has not completed');
}

const ml = {
  meta: Object.freeze({
    name: app.name,
    version: app.version,
    inputs: Object.freeze(app.inputs.slice()),
    outputs: Object.freeze(app.outputs.slice()),
    labels: Object.freeze((app.labels || app.outputs).slice()),
    maxBatch: app.maxBatch || 4096,
    runtime: 'tfjs-core ' + tf.version_core,
  }),

  async init() {
    await tf.setBackend('cpu');
    await tf.ready();
    const weightData = base64Decode(MODEL.weights).buffer;
    model = await loadLayersModel(
      tf.io.fromMemory({ modelTopology: MODEL.topology, weightSpecs: MODEL.weightSpecs, weightData }),
    );
    const shape = model.inputs[0].shape;
    if (shape[shape.length - 1] !== nIn) {
      throw new Error('model expects ' + shape[shape.length - 1] + ' features, app.json lists ' + nIn);
    }
    // app.kernel (build option --kernel) pins the fast path's kernel; 'auto' takes the fastest that applies.
    const want = app.kernel || 'auto';
    if (!KERNELS.includes(want)) throw new Error('unknown kernel "' + want + '"; known: ' + KERNELS.join(', '));
    plan = want === 'tfjs-cpu' ? null : extractDenseStack(model);
    unrolled = plan && (want === 'auto' || want === 'dense-unrolled') ? compileUnrolled(plan, standardize) : null;
    kernel = unrolled ? 'dense-unrolled' : plan ? 'dense-js' : 'tfjs-cpu';
    if (want !== 'auto' && want !== kernel) {
      throw new Error('kernel "' + want + '" does not apply to this model (it would run ' + kernel + ')');
    }
    return { kernel };
  },

  // Allocates (once per size) and returns [input, output] ArrayBuffers for up to `rows` rows. The bundle keeps
  // them referenced for its whole life, so the host's zero-copy views stay valid until the context closes.
  buffers(rows) {
    requireInit();
    if (!(Number.isInteger(rows) && rows > 0 && rows <= ml.meta.maxBatch)) {
      throw new Error('buffers(rows): rows must be an integer in 1..' + ml.meta.maxBatch);
    }
    if (rows !== maxRows) {
      maxRows = rows;
      inputBuffer = new ArrayBuffer(rows * nIn * 4);
      outputBuffer = new ArrayBuffer(rows * nOut * 4);
      input = new Float32Array(inputBuffer);
      output = new Float32Array(outputBuffer);
      if (unrolled) {
        forward = unrolled; // standardization is fused into the generated code
      } else {
        prepared = new Float32Array(rows * nIn);
        const net = plan ? compileDenseStack(plan, rows) : tfjsForward;
        forward = (x, y, n) => {
          preprocess(x, prepared, n);
          net(prepared, y, n);
        };
      }
    }
    return [inputBuffer, outputBuffer];
  },

  // The fast path: n rows of float32 features in the input buffer -> n * outputs float32 in the output buffer.
  // Returns the number of values written.
  predictBuffer(n) {
    if (forward === null) throw new Error('call ml.buffers(rows) before ml.predictBuffer(n)');
    if (!(Number.isInteger(n) && n >= 0 && n <= maxRows)) {
      throw new Error('predictBuffer(n): n must be an integer in 0..' + maxRows);
    }
    forward(input, output, n);
    return n * nOut;
  },

  // The flexible path: records are arrays in `meta.inputs` order or objects keyed by feature name; returns
  // [{label, scores}] computed by TF.js itself.
  predict(records) {
    requireInit();
    if (!Array.isArray(records)) throw new InputError('predict(records): records must be an array');
    const n = records.length;
    const x = new Float32Array(n * nIn);
    for (let r = 0; r < n; r++) {
      const rec = records[r];
      for (let i = 0; i < nIn; i++) {
        const v = Array.isArray(rec) ? rec[i] : rec === null ? undefined : rec[app.inputs[i]];
        if (typeof v !== 'number') {
          throw new InputError('record ' + r + ': feature "' + app.inputs[i] + '" is ' +
            (v === undefined ? 'missing' : 'not a number'));
        }
        x[r * nIn + i] = v;
      }
    }
    const prep = new Float32Array(n * nIn);
    preprocess(x, prep, n);
    const out = new Float32Array(n * nOut);
    if (n > 0) tfjsForward(prep, out, n);
    const labels = ml.meta.labels;
    const results = new Array(n);
    for (let r = 0; r < n; r++) {
      const scores = Array.from(out.subarray(r * nOut, (r + 1) * nOut));
      let best = 0;
      for (let j = 1; j < nOut; j++) if (scores[j] > scores[best]) best = j;
      results[r] = { label: labels[best], scores };
    }
    return results;
  },

  get kernel() {
    return kernel;
  },

  selfTest: app.selfTest,
};

globalThis.ml = ml;
