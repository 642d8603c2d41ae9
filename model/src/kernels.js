// Bundle-level kernels for the fast path: a stack of Dense layers compiled into plain loops over typed
// arrays. For a small tabular model the TF.js op dispatch (tensor allocation, kernel lookup, dispose) costs far
// more than the arithmetic, so the fast path runs these loops; the JSON path and anything these kernels do not
// cover run TF.js itself, and the self-test compares both against the training framework's outputs.

const ACTIVATIONS = new Set(['linear', 'relu', 'sigmoid', 'tanh', 'softmax', 'elu', 'selu', 'relu6']);
const SKIPPED = new Set(['InputLayer', 'Dropout', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout']);

function activationName(layer) {
  const a = layer.getConfig().activation;
  return typeof a === 'string' ? a : a && a.className ? a.className.toLowerCase() : 'linear';
}

// Returns [{inSize, outSize, w (Float32Array, out-major), b, act}] or null when the model is not a plain
// Dense stack with supported activations.
export function extractDenseStack(model) {
  const plan = [];
  for (const layer of model.layers) {
    const cls = layer.getClassName();
    if (SKIPPED.has(cls)) continue;
    if (cls !== 'Dense') return null;
    const act = activationName(layer);
    if (!ACTIVATIONS.has(act)) return null;
    const weights = layer.getWeights();
    const kernel = weights[0];
    const [inSize, outSize] = kernel.shape;
    const k = kernel.dataSync();
    const w = new Float32Array(inSize * outSize);
    for (let i = 0; i < inSize; i++) {
      for (let o = 0; o < outSize; o++) w[o * inSize + i] = k[i * outSize + o];
    }
    const b = weights.length > 1 ? Float32Array.from(weights[1].dataSync()) : new Float32Array(outSize);
    plan.push({ inSize, outSize, w, b, act });
  }
  for (let i = 1; i < plan.length; i++) {
    if (plan[i].inSize !== plan[i - 1].outSize) return null;
  }
  return plan.length ? plan : null;
}

function applyActivation(act, y, base, size) {
  switch (act) {
    case 'linear':
      return;
    case 'relu':
      for (let j = 0; j < size; j++) if (y[base + j] < 0) y[base + j] = 0;
      return;
    case 'relu6':
      for (let j = 0; j < size; j++) y[base + j] = Math.min(6, Math.max(0, y[base + j]));
      return;
    case 'sigmoid':
      for (let j = 0; j < size; j++) y[base + j] = 1 / (1 + Math.exp(-y[base + j]));
      return;
    case 'tanh':
      for (let j = 0; j < size; j++) y[base + j] = Math.tanh(y[base + j]);
      return;
    case 'elu':
      for (let j = 0; j < size; j++) if (y[base + j] < 0) y[base + j] = Math.exp(y[base + j]) - 1;
      return;
    case 'selu': {
      const a = 1.6732632423543772;
      const s = 1.0507009873554805;
      for (let j = 0; j < size; j++) {
        const v = y[base + j];
        y[base + j] = v > 0 ? s * v : s * a * (Math.exp(v) - 1);
      }
      return;
    }
    case 'softmax': {
      let m = -Infinity;
      for (let j = 0; j < size; j++) if (y[base + j] > m) m = y[base + j];
      let sum = 0;
      for (let j = 0; j < size; j++) {
        const e = Math.exp(y[base + j] - m);
        y[base + j] = e;
        sum += e;
      }
      for (let j = 0; j < size; j++) y[base + j] /= sum;
      return;
    }
    default:
      throw new Error('unsupported activation ' + act);
  }
}

// One Dense layer over n rows: y[r, o] = act(b[o] + sum_i x[r, i] * w[o, i]). Intermediates are Float32Array
// so every layer rounds to float32 the way the training framework does.
function denseForward(layer, x, y, n) {
  const { inSize, outSize, w, b, act } = layer;
  for (let r = 0; r < n; r++) {
    const xr = r * inSize;
    const yr = r * outSize;
    for (let o = 0; o < outSize; o++) {
      const wo = o * inSize;
      let s = b[o];
      for (let i = 0; i < inSize; i++) s += x[xr + i] * w[wo + i];
      y[yr + o] = s;
    }
    if (act !== 'linear') applyActivation(act, y, yr, outSize);
  }
}

// Compiles the plan into forward(input, output, n) with scratch buffers for maxRows rows.
export function compileDenseStack(plan, maxRows) {
  const scratch = plan.slice(0, -1).map((l) => new Float32Array(maxRows * l.outSize));
  return function forward(input, output, n) {
    let x = input;
    for (let l = 0; l < plan.length; l++) {
      const y = l === plan.length - 1 ? output : scratch[l];
      denseForward(plan[l], x, y, n);
      x = y;
    }
  };
}
