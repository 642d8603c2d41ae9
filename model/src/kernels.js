// Bundle-level kernels for the fast path: a stack of Dense layers compiled into plain loops over typed
// arrays. For a small tabular model the TF.js op dispatch (tensor allocation, kernel lookup, dispose) costs far
// more than the arithmetic, so the fast path runs these loops; the JSON path and anything these kernels do not
// cover run TF.js itself, and the self-test compares both against the training framework's outputs.

const ACTIVATIONS = new Set(['linear', 'relu', 'sigmoid', 'tanh', 'softmax', 'elu', 'selu', 'relu6']);
const SELU_ALPHA = 1.6732632423543772;
const SELU_SCALE = 1.0507009873554805;
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
    case 'selu':
      for (let j = 0; j < size; j++) {
        const v = y[base + j];
        y[base + j] = v > 0 ? SELU_SCALE * v : SELU_SCALE * SELU_ALPHA * (Math.exp(v) - 1);
      }
      return;
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

// Straight-line code for small stacks: one generated function per model whose body computes a whole row with
// the weights as literals and the activations in locals, so V8 compiles it to register arithmetic with no
// loads of weights or intermediates. Standardization is fused in front. Each layer's results are rounded to
// float32 (Math.fround), as the training framework computes in float32.
const MAX_UNROLLED_MACS = 16384;

function lit(v) {
  // A float32 value printed as the shortest double that round-trips: exact.
  return Object.is(v, -0) ? '-0' : String(v);
}

function activationCode(act, names) {
  const f = (expr) => names.map((n) => `${n} = ${expr(n)};`).join('\n');
  switch (act) {
    case 'linear':
      return '';
    case 'relu':
      return f((n) => `${n} > 0 ? ${n} : 0`);
    case 'relu6':
      return f((n) => `${n} > 0 ? (${n} < 6 ? ${n} : 6) : 0`);
    case 'sigmoid':
      return f((n) => `Math.fround(1 / (1 + Math.exp(-${n})))`);
    case 'tanh':
      return f((n) => `Math.fround(Math.tanh(${n}))`);
    case 'elu':
      return f((n) => `${n} > 0 ? ${n} : Math.fround(Math.exp(${n}) - 1)`);
    case 'selu':
      return f((n) => `${n} > 0 ? Math.fround(${SELU_SCALE} * ${n}) : ` +
        `Math.fround(${SELU_SCALE * SELU_ALPHA} * (Math.exp(${n}) - 1))`);
    case 'softmax': {
      const lines = [`let m = ${names[0]};`];
      for (const n of names.slice(1)) lines.push(`if (${n} > m) m = ${n};`);
      for (const n of names) lines.push(`${n} = Math.exp(${n} - m);`);
      lines.push(`const sum = ${names.join(' + ')};`);
      for (const n of names) lines.push(`${n} = ${n} / sum;`);
      return '{\n' + lines.join('\n') + '\n}';
    }
    default:
      throw new Error('unsupported activation ' + act);
  }
}

// Returns forward(rawInput, output, n) or null when the model is too large to unroll.
export function compileUnrolled(plan, standardize) {
  const macs = plan.reduce((s, l) => s + l.inSize * l.outSize, 0);
  if (macs > MAX_UNROLLED_MACS) return null;
  const nIn = plan[0].inSize;
  const nOut = plan[plan.length - 1].outSize;
  const body = [];
  let names = [];
  for (let i = 0; i < nIn; i++) {
    const v = `x[xi + ${i}]`;
    const expr = standardize ? `Math.fround((${v} - ${lit(standardize.mean[i])}) / ${lit(standardize.std[i])})` : v;
    body.push(`const a0_${i} = ${expr};`);
    names.push(`a0_${i}`);
  }
  plan.forEach((layer, l) => {
    const outNames = [];
    for (let o = 0; o < layer.outSize; o++) {
      const terms = [lit(layer.b[o])];
      for (let i = 0; i < layer.inSize; i++) {
        const w = layer.w[o * layer.inSize + i];
        if (w !== 0) terms.push(`${names[i]} * ${lit(w)}`);
      }
      const name = `a${l + 1}_${o}`;
      body.push(`let ${name} = Math.fround(${terms.join(' + ')});`);
      outNames.push(name);
    }
    const act = activationCode(layer.act, outNames);
    if (act) body.push(act);
    names = outNames;
  });
  names.forEach((n, o) => body.push(`y[yi + ${o}] = ${n};`));
  const src = `for (let r = 0, xi = 0, yi = 0; r < n; r++, xi += ${nIn}, yi += ${nOut}) {\n` +
    body.join('\n') + '\n}\nreturn n;';
  // eslint-disable-next-line no-new-func
  return new Function('x', 'y', 'n', src);
}
