// Bundle-level kernels for the fast path. For a small tabular model the TF.js op dispatch (tensor allocation,
// kernel lookup, dispose) costs far more than the arithmetic, so the fast path runs generated JavaScript instead;
// the JSON path and every model these kernels do not cover run TF.js itself, and the self-test compares both
// against the training framework's outputs.
//
// planModel(model) turns a loaded TF.js layers model into a plan (below) or says which layer keeps it off the
// fast path. compileUnrolled(plan, standardize) generates straight-line code for a whole row (small models);
// compileDenseStack(plan, maxRows) generates one loop kernel per step (any size).
//
// The plan is an array of steps, each mapping a row vector of inSize float32 values to outSize values:
//   {kind: 'dense', inSize, outSize, w, b, acts, layers}   w: Float64Array(outSize * inSize), w[o * inSize + i];
//                                                          b: Float64Array(outSize)
//   {kind: 'affine', inSize, outSize, scale, shift, acts, layers}   y[i] = x[i] * scale[i] + shift[i], rounded
//                                                          to float32 after the product and after the sum, as
//                                                          Keras' BatchNormalization (inSize === outSize;
//                                                          scale, shift: Float64Array)
// then the activations `acts` in order, each {name, ...parameters} (see ACTIVATIONS; e.g. {name: 'relu', max: 6},
// {name: 'leaky_relu', alpha: 0.3}, {name: 'prelu', alpha: Float64Array(outSize)}). `layers` names the Keras
// layers the step computes. Every step's result, and every activation's, is rounded to float32, as the training
// framework computes in float32. A BatchNormalization folds into the Dense next to it where that cannot move the
// result by more than rounding (FOLD_MAX_SHIFT), else it is an affine step.

// Layers that are the identity at inference.
const IDENTITY = new Set([
  'InputLayer', 'Dropout', 'SpatialDropout1D', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout',
]);
const SELU_ALPHA = 1.6732632423543772;
const SELU_SCALE = 1.0507009873554805;
const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

// TF.js activation class names (what a loaded layer's `activation.getClassName()` says) -> plan activations.
// Keras' Dense(activation=...) converts to these: 'silu' is saved as 'swish', 'hard_sigmoid' loads as
// 'hardSigmoid'. TF.js 4.22 cannot load 'leaky_relu' or 'exponential' as an activation: such a model never
// reaches planModel.
const TFJS_ACTIVATIONS = {
  linear: null,
  relu: { name: 'relu' },
  relu6: { name: 'relu', max: 6 },
  elu: { name: 'elu' },
  selu: { name: 'selu' },
  sigmoid: { name: 'sigmoid' },
  hardSigmoid: { name: 'hard_sigmoid' },
  tanh: { name: 'tanh' },
  softplus: { name: 'softplus' },
  softsign: { name: 'softsign' },
  swish: { name: 'swish' },
  mish: { name: 'mish' },
  gelu: { name: 'gelu' },
  gelu_new: { name: 'gelu_tanh' },
  softmax: { name: 'softmax' },
  logSoftmax: { name: 'log_softmax' },
};

// ---------------------------------------------------------------------------------------------------------------
// erf in double precision: W. J. Cody's rational Chebyshev approximations ("Rational Chebyshev approximations for
// the error function", Math. Comp. 1969; the netlib specfun CALERF algorithm), relative error ~1e-16. TF.js' own
// erf kernel (Abramowitz-Stegun 7.1.26) is good to ~1.5e-7 only.
const ERF_A = [3.16112374387056560, 113.864154151050156, 377.485237685302021, 3209.37758913846947,
  0.185777706184603153];
const ERF_B = [23.6012909523441209, 244.024637934444173, 1282.61652607737228, 2844.23683343917062];
const ERF_C = [0.564188496988670089, 8.88314979438837594, 66.1191906371416295, 298.635138197400131,
  881.952221241769090, 1712.04761263407058, 2051.07837782607147, 1230.33935479799725, 2.15311535474403846e-8];
const ERF_D = [15.7449261107098347, 117.693950891312499, 537.181101862009858, 1621.38957456669019,
  3290.79923573345963, 4362.61909014324716, 3439.36767414372164, 1230.33935480374942];
const ERF_P = [0.305326634961232344, 0.360344899949804439, 0.125781726111229246, 0.0160837851487422766,
  6.58749161529837803e-4, 0.0163153871373020978];
const ERF_Q = [2.56852019228982242, 1.87295284992346047, 0.527905102951428412, 0.0605183413124413191,
  2.33520497626869185e-3];
const ONE_OVER_SQRT_PI = 0.56418958354775628695;

export function erf(x) {
  const y = Math.abs(x);
  if (y <= 0.46875) {
    const z = y * y;
    let num = ERF_A[4] * z;
    let den = z;
    for (let i = 0; i < 3; i++) {
      num = (num + ERF_A[i]) * z;
      den = (den + ERF_B[i]) * z;
    }
    return (x * (num + ERF_A[3])) / (den + ERF_B[3]);
  }
  let erfc; // erfc(|x|)
  if (y >= 26.543) {
    erfc = 0;
  } else {
    let r;
    if (y <= 4) {
      let num = ERF_C[8] * y;
      let den = y;
      for (let i = 0; i < 7; i++) {
        num = (num + ERF_C[i]) * y;
        den = (den + ERF_D[i]) * y;
      }
      r = (num + ERF_C[7]) / (den + ERF_D[7]);
    } else {
      const z = 1 / (y * y);
      let num = ERF_P[5] * z;
      let den = z;
      for (let i = 0; i < 4; i++) {
        num = (num + ERF_P[i]) * z;
        den = (den + ERF_Q[i]) * z;
      }
      r = (ONE_OVER_SQRT_PI - (z * (num + ERF_P[4])) / (den + ERF_Q[4])) / y;
    }
    // exp(-y^2) as exp(-t^2) * exp(-(y - t)(y + t)) with t = y rounded down to 1/16: no cancellation in y^2.
    const t = Math.trunc(y * 16) / 16;
    erfc = Math.exp(-t * t) * Math.exp(-(y - t) * (y + t)) * r;
  }
  const v = 0.5 - erfc + 0.5;
  return x < 0 ? -v : v;
}

// ---------------------------------------------------------------------------------------------------------------
// Activations. Elementwise ones are a JavaScript expression of `v` (a float32 value in a double) whose result is
// rounded to float32; `p` is the code of the activation's per-unit parameter (PReLU's alpha). Vector ones
// (softmax, log_softmax) are generated over the whole row.
function f32(v) {
  return Math.fround(v);
}

const ACTIVATIONS = {
  relu: (a, v) => (a.max === undefined ? `${v} > 0 ? ${v} : 0` : `${v} > 0 ? (${v} < ${lit(f32(a.max))} ? ${v} : ` +
    `${lit(f32(a.max))}) : 0`),
  leaky_relu: (a, v) => `${v} > 0 ? ${v} : Math.fround(${lit(f32(a.alpha))} * ${v})`,
  prelu: (a, v, p) => `${v} > 0 ? ${v} : Math.fround(${p} * ${v})`,
  thresholded_relu: (a, v) => `${v} > ${lit(f32(a.theta))} ? ${v} : 0`,
  elu: (a, v) => `${v} > 0 ? ${v} : Math.fround(Math.expm1(${v}))`,
  selu: (a, v) => `${v} > 0 ? Math.fround(${SELU_SCALE} * ${v}) : ` +
    `Math.fround(${SELU_SCALE * SELU_ALPHA} * Math.expm1(${v}))`,
  sigmoid: (a, v) => `Math.fround(1 / (1 + Math.exp(-${v})))`,
  // tf_keras 2.19 and TF.js: clip(0.2 x + 0.5, 0, 1) (Keras 3's x/6 + 0.5 is not what the converter meets).
  hard_sigmoid: (a, v) => `Math.fround(Math.min(1, Math.max(0, ${lit(f32(0.2))} * ${v} + 0.5)))`,
  tanh: (a, v) => `Math.fround(Math.tanh(${v}))`,
  softplus: (a, v) => `Math.fround(${v} > 0 ? ${v} + Math.log1p(Math.exp(-${v})) : Math.log1p(Math.exp(${v})))`,
  softsign: (a, v) => `Math.fround(${v} / (1 + Math.abs(${v})))`,
  swish: (a, v) => `Math.fround(${v} / (1 + Math.exp(-${v})))`,
  mish: (a, v) => `Math.fround(${v} * Math.tanh(${v} > 0 ? ${v} + Math.log1p(Math.exp(-${v})) : ` +
    `Math.log1p(Math.exp(${v}))))`,
  gelu: (a, v) => `Math.fround(0.5 * ${v} * (1 + erf(${v} * ${Math.SQRT1_2})))`,
  gelu_tanh: (a, v) => `Math.fround(0.5 * ${v} * (1 + Math.tanh(${SQRT_2_OVER_PI} * (${v} + 0.044715 * ${v} * ` +
    `${v} * ${v}))))`,
};
const VECTOR_ACTIVATIONS = new Set(['softmax', 'log_softmax']);

function lit(v) {
  // A double printed as the shortest text that round-trips: exact.
  return Object.is(v, -0) ? '-0' : String(v);
}

// ---------------------------------------------------------------------------------------------------------------
// planModel

function describe(layer) {
  return `layer "${layer.name}" (${layer.getClassName()})`;
}

// The layers in order when the model is one chain: one input, one output, each layer fed by the one before.
function layerChain(model) {
  const chain = 'model is not a single chain';
  if (model.inputs.length !== 1) return { reason: `${chain}: it has ${model.inputs.length} inputs` };
  if (model.outputs.length !== 1) return { reason: `${chain}: it has ${model.outputs.length} outputs` };
  const layers = model.layers;
  if (model.getClassName() === 'Sequential') return { layers };
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i];
    const nodes = layer.inboundNodes;
    if (nodes.length !== 1) return { reason: `${chain}: ${describe(layer)} is called ${nodes.length} times` };
    const inbound = nodes[0].inboundLayers;
    if (i === 0) {
      if (layer.getClassName() !== 'InputLayer') return { reason: `${chain}: it does not start at its input` };
      continue;
    }
    if (inbound.length !== 1) return { reason: `${chain}: ${describe(layer)} takes ${inbound.length} inputs` };
    if (inbound[0] !== layers[i - 1]) {
      return { reason: `${chain}: ${describe(layer)} does not take the output of the layer before it` };
    }
  }
  if (model.outputLayers[0] !== layers[layers.length - 1]) {
    return { reason: `${chain}: its output is not its last layer` };
  }
  return { layers };
}

function values(variable) {
  return Float64Array.from(variable.read().dataSync());
}

function activationOf(layer) {
  const a = layer.activation;
  const name = a && typeof a.getClassName === 'function' ? a.getClassName() : 'linear';
  if (!(name in TFJS_ACTIVATIONS)) {
    return { reason: `${describe(layer)} has activation "${name}", which the generated kernels do not cover` };
  }
  return { act: TFJS_ACTIVATIONS[name] };
}

// One layer -> primitive ops ({op: 'dense' | 'affine' | 'act', ...}) appended to `ops`, given the row width.
// Returns the width after the layer, or {reason}.
function layerOps(layer, width, ops) {
  const cls = layer.getClassName();
  const name = layer.name;
  if (IDENTITY.has(cls)) return width;
  const lastAxis = (axis) => {
    const a = Array.isArray(axis) ? (axis.length === 1 ? axis[0] : null) : axis;
    return a === -1 || a === 1;
  };
  switch (cls) {
    case 'Dense': {
      const kernel = layer.kernel.read();
      const [inSize, outSize] = kernel.shape;
      if (inSize !== width) return { reason: `${describe(layer)} takes ${inSize} values, not ${width}` };
      const k = kernel.dataSync();
      const w = new Float64Array(inSize * outSize);
      for (let i = 0; i < inSize; i++) {
        for (let o = 0; o < outSize; o++) w[o * inSize + i] = k[i * outSize + o];
      }
      const b = layer.useBias && layer.bias ? values(layer.bias) : new Float64Array(outSize);
      ops.push({ op: 'dense', inSize, outSize, w, b, name });
      const { act, reason } = activationOf(layer);
      if (reason) return { reason };
      if (act) ops.push({ op: 'act', act, name });
      return outSize;
    }
    case 'Activation': {
      const { act, reason } = activationOf(layer);
      if (reason) return { reason };
      if (act) ops.push({ op: 'act', act, name });
      return width;
    }
    case 'ReLU': { // TF.js computes max_value only (it ignores Keras' negative_slope and threshold)
      const act = layer.maxValue == null ? { name: 'relu' } : { name: 'relu', max: layer.maxValue };
      ops.push({ op: 'act', act, name });
      return width;
    }
    case 'LeakyReLU':
      ops.push({ op: 'act', act: { name: 'leaky_relu', alpha: layer.alpha }, name });
      return width;
    case 'ELU': // TF.js refuses to load any alpha but 1
      ops.push({ op: 'act', act: { name: 'elu' }, name });
      return width;
    case 'ThresholdedReLU':
      ops.push({ op: 'act', act: { name: 'thresholded_relu', theta: layer.theta }, name });
      return width;
    case 'PReLU': {
      const a = values(layer.alpha);
      if (a.length !== 1 && a.length !== width) return { reason: `${describe(layer)} has ${a.length} alphas` };
      const alpha = a.length === 1 ? new Float64Array(width).fill(a[0]) : a;
      ops.push({ op: 'act', act: { name: 'prelu', alpha }, name });
      return width;
    }
    case 'Softmax':
      if (!lastAxis(layer.axis)) return { reason: `${describe(layer)} is not over the last axis` };
      ops.push({ op: 'act', act: { name: 'softmax' }, name });
      return width;
    case 'BatchNormalization': {
      if (!lastAxis(layer.axis)) return { reason: `${describe(layer)} is not over the last axis` };
      const mean = values(layer.movingMean);
      const variance = values(layer.movingVariance);
      const gamma = layer.scale ? values(layer.gamma) : null;
      const beta = layer.center ? values(layer.beta) : null;
      if (mean.length !== width) {
        return { reason: `${describe(layer)} normalizes ${mean.length} values, not ${width}` };
      }
      // Keras (tf.nn.batch_normalization) computes in float32: inv = rsqrt(var + eps) * gamma, then
      // x * inv + (beta - mean * inv). The same constants here, to the bit: TF's float32 rsqrt is 1 / sqrt with
      // two roundings (one correctly rounded 1 / sqrt missed Keras' inv by an ulp for one of the zoo's six).
      const eps = f32(layer.epsilon);
      const scale = new Float64Array(width);
      const shift = new Float64Array(width);
      for (let i = 0; i < width; i++) {
        let inv = f32(1 / f32(Math.sqrt(f32(variance[i] + eps))));
        if (gamma) inv = f32(inv * gamma[i]);
        scale[i] = inv;
        shift[i] = f32((beta ? beta[i] : 0) - f32(mean[i] * inv));
      }
      ops.push({ op: 'affine', size: width, scale, shift, name });
      return width;
    }
    default:
      return { reason: `${describe(layer)} is not covered by the generated kernels` };
  }
}

// Keras computes BatchNormalization in float32 as x * inv + shift, two roundings; folded into a Dense the
// product and the sum are exact instead. The difference is about 6e-8 * (|shift| + 2 |z|) per unit: harmless for a
// normalization of values near their mean, but a raw input far from zero relative to its spread (a year,
// 2020 +- 3: |shift| ~ 670) moves Keras' own result by ~4e-5 and the model's outputs by more than 1e-5. Such a
// BatchNormalization stays a step of its own that rounds as Keras does (bit-identical on the zoo).
const FOLD_MAX_SHIFT = 8;

function foldable(op) {
  return op.shift.every((t) => Math.abs(t) <= FOLD_MAX_SHIFT);
}

// The primitive ops -> plan steps: activations join the step before them; an affine op folds into the Dense
// before it (when no activation comes between) or else into the Dense after it; one with neither, or one that
// must not fold (above), stays a step.
function fuse(ops, width, fold) {
  const plan = [];
  let pending = null; // a foldable affine op waiting for the next Dense
  const last = () => plan[plan.length - 1];
  const flush = () => {
    if (pending === null) return;
    const { size, scale, shift, name } = pending;
    plan.push({ kind: 'affine', inSize: size, outSize: size, scale, shift, acts: [], layers: [name] });
    pending = null;
  };
  for (const op of ops) {
    if (op.op === 'affine') {
      flush();
      const cur = last();
      if (fold && foldable(op) && cur && cur.kind === 'dense' && cur.acts.length === 0) {
        foldAfter(cur, op.scale, op.shift);
        cur.layers.push(op.name);
      } else {
        pending = op;
        if (!(fold && foldable(op))) flush();
      }
    } else if (op.op === 'dense') {
      const step = { kind: 'dense', inSize: op.inSize, outSize: op.outSize, w: op.w, b: op.b, acts: [], layers: [] };
      if (pending !== null) {
        foldBefore(step, pending.scale, pending.shift);
        step.layers.push(pending.name);
        pending = null;
      }
      step.layers.push(op.name);
      plan.push(step);
    } else {
      flush();
      let cur = last();
      if (!cur) {
        cur = identityStep(width);
        plan.push(cur);
      }
      cur.acts.push(op.act);
      if (cur.layers[cur.layers.length - 1] !== op.name) cur.layers.push(op.name);
    }
  }
  flush();
  if (plan.length === 0) plan.push(identityStep(width));
  return plan;
}

function identityStep(size) {
  return {
    kind: 'affine', inSize: size, outSize: size, scale: new Float64Array(size).fill(1),
    shift: new Float64Array(size), acts: [], layers: [],
  };
}

// y = s * (W x + b) + t, per output unit.
function foldAfter(step, s, t) {
  const { inSize, outSize, w, b } = step;
  for (let o = 0; o < outSize; o++) {
    for (let i = 0; i < inSize; i++) w[o * inSize + i] *= s[o];
    b[o] = b[o] * s[o] + t[o];
  }
}

// y = W (s x + t) + b = (W diag s) x + (W t + b).
function foldBefore(step, s, t) {
  const { inSize, outSize, w, b } = step;
  for (let o = 0; o < outSize; o++) {
    let bias = b[o];
    for (let i = 0; i < inSize; i++) {
      bias += w[o * inSize + i] * t[i];
      w[o * inSize + i] *= s[i];
    }
    b[o] = bias;
  }
}

/**
 * Plans the fast path for a loaded TF.js layers model.
 *
 * @param model a tf.LayersModel
 * @param options {fold: false} keeps every BatchNormalization a step of its own (for measuring the fold)
 * @returns {{plan: Array | null, reason: string}}: the plan (see the top of this file), or null and the reason,
 *   naming the layer, why the model stays on TF.js ('' when there is a plan)
 */
export function planModel(model, { fold = true } = {}) {
  const { layers, reason } = layerChain(model);
  if (reason) return { plan: null, reason };
  const shape = model.inputs[0].shape;
  if (shape.length !== 2 || !(shape[1] > 0)) {
    return { plan: null, reason: `the model's input has shape [${shape}]; the generated kernels take vectors` };
  }
  const ops = [];
  let width = shape[1];
  for (const layer of layers) {
    const next = layerOps(layer, width, ops);
    if (typeof next !== 'number') return { plan: null, reason: next.reason };
    width = next;
  }
  return { plan: fuse(ops, shape[1], fold), reason: '' };
}

// Kept for callers of the first version: the plan, or null.
export function extractDenseStack(model) {
  return planModel(model).plan;
}

/** One line per plan, e.g. "dense 13->16 relu | dense 16->3 softmax". */
export function describePlan(plan) {
  const act = (a) => {
    const p = Object.entries(a).filter(([k, v]) => k !== 'name' && typeof v === 'number');
    return p.length ? `${a.name}(${p.map(([k, v]) => `${k}=${v}`).join(', ')})` : a.name;
  };
  return plan.map((s) => [`${s.kind} ${s.inSize}->${s.outSize}`, ...s.acts.map(act)].join(' ')).join(' | ');
}

// ---------------------------------------------------------------------------------------------------------------
// Code generation shared by both kernels.

// Code applying `act` to the row's values `names` (locals, or array elements) in place. `param(o)` is the code of
// unit o's parameter array element; `final`: the values go straight into the float32 output, so a last rounding
// is left to the store.
function activationCode(act, names, param, final) {
  if (VECTOR_ACTIVATIONS.has(act.name)) {
    const lines = [`let m = ${names[0]};`];
    for (const n of names.slice(1)) lines.push(`if (${n} > m) m = ${n};`);
    const round = (e) => (final ? e : `Math.fround(${e})`);
    if (act.name === 'softmax') {
      for (const n of names) lines.push(`${n} = Math.exp(${n} - m);`);
      lines.push(`const sum = ${names.join(' + ')};`);
      for (const n of names) lines.push(`${n} = ${round(`${n} / sum`)};`);
    } else {
      lines.push(`const lse = m + Math.log(${names.map((n) => `Math.exp(${n} - m)`).join(' + ')});`);
      for (const n of names) lines.push(`${n} = ${round(`${n} - lse`)};`);
    }
    return '{\n' + lines.join('\n') + '\n}';
  }
  const expr = ACTIVATIONS[act.name];
  if (!expr) throw new Error('unsupported activation ' + act.name);
  return names.map((n, o) => `${n} = ${expr(act, n, param(o))};`).join('\n');
}

function makeFunction(params, args, body) {
  // eslint-disable-next-line no-new-func
  return new Function(...params, body)(...args);
}

// ---------------------------------------------------------------------------------------------------------------
// dense-js: one generated loop kernel per step, weights in typed arrays. A Dense step computes two rows and four
// outputs at a time (eight accumulators: each weight and input loaded once for two and four products), 2-2.5x
// faster than one dot product at a time on a 128 x 112 layer; each output still sums in input order from its bias,
// so the results are the same.

// Code applying the step's activations to the row of y at offset `yr`, in place (y is float32: stores round).
function rowActivations(acts, outSize, yr) {
  const lines = [];
  let k = 0;
  while (k < acts.length) {
    if (VECTOR_ACTIVATIONS.has(acts[k].name)) {
      const act = acts[k++];
      const each = (stmt) => `for (let o = 0; o < ${outSize}; o++) ${stmt}`;
      const at = `y[${yr} + o]`;
      lines.push('{', 'let m = -Infinity;', each(`if (${at} > m) m = ${at};`), 'let sum = 0;');
      if (act.name === 'softmax') {
        lines.push(each(`{ const e = Math.exp(${at} - m); ${at} = e; sum += e; }`), each(`${at} /= sum;`));
      } else {
        lines.push(each(`sum += Math.exp(${at} - m);`), 'const lse = m + Math.log(sum);', each(`${at} -= lse;`));
      }
      lines.push('}');
      continue;
    }
    lines.push(`for (let o = 0; o < ${outSize}; o++) {`, `let v = y[${yr} + o];`);
    for (; k < acts.length && !VECTOR_ACTIVATIONS.has(acts[k].name); k++) {
      const kk = k;
      lines.push(activationCode(acts[k], ['v'], () => `p${kk}[o]`, false));
    }
    lines.push(`y[${yr} + o] = v;`, '}');
  }
  return lines.join('\n');
}

function denseLoopCode(step) {
  const { inSize: I, outSize: O, acts } = step;
  const quads = O - (O % 4);
  const acc = (name, rows) => rows.map((r) => `${name}${r}`);
  const lines = [
    'let r = 0;',
    'for (; r + 2 <= n; r += 2) {',
    `const x0 = r * ${I}, x1 = x0 + ${I}, y0 = r * ${O}, y1 = y0 + ${O};`,
    `for (let o = 0; o < ${quads}; o += 4) {`,
    `const w0 = o * ${I}, w1 = w0 + ${I}, w2 = w1 + ${I}, w3 = w2 + ${I};`,
    'let a0 = b[o], a1 = b[o + 1], a2 = b[o + 2], a3 = b[o + 3];',
    'let c0 = a0, c1 = a1, c2 = a2, c3 = a3;',
    `for (let i = 0; i < ${I}; i++) {`,
    'const u = x[x0 + i], v = x[x1 + i];',
    'const q0 = w[w0 + i], q1 = w[w1 + i], q2 = w[w2 + i], q3 = w[w3 + i];',
    'a0 += u * q0; a1 += u * q1; a2 += u * q2; a3 += u * q3;',
    'c0 += v * q0; c1 += v * q1; c2 += v * q2; c3 += v * q3;',
    '}',
    ...acc('a', [0, 1, 2, 3]).map((a, j) => `y[y0 + o + ${j}] = ${a};`),
    ...acc('c', [0, 1, 2, 3]).map((c, j) => `y[y1 + o + ${j}] = ${c};`),
    '}',
    `for (let o = ${quads}; o < ${O}; o++) {`,
    `const wo = o * ${I};`,
    'let a = b[o], c = a;',
    `for (let i = 0; i < ${I}; i++) { const q = w[wo + i]; a += x[x0 + i] * q; c += x[x1 + i] * q; }`,
    'y[y0 + o] = a; y[y1 + o] = c;',
    '}',
    rowActivations(acts, O, 'y0'),
    rowActivations(acts, O, 'y1'),
    '}',
    'for (; r < n; r++) {',
    `const x0 = r * ${I}, y0 = r * ${O};`,
    `for (let o = 0; o < ${O}; o++) {`,
    `const wo = o * ${I};`,
    'let a = b[o];',
    `for (let i = 0; i < ${I}; i++) a += x[x0 + i] * w[wo + i];`,
    'y[y0 + o] = a;',
    '}',
    rowActivations(acts, O, 'y0'),
    '}',
  ];
  return lines.join('\n');
}

function affineLoopCode(step) {
  const { outSize: O, acts } = step;
  return [
    `for (let r = 0, y0 = 0; r < n; r++, y0 += ${O}) {`,
    `for (let o = 0; o < ${O}; o++) y[y0 + o] = Math.fround(x[y0 + o] * w[o]) + b[o];`,
    rowActivations(acts, O, 'y0'),
    '}',
  ].join('\n');
}

function loopKernel(step) {
  const params = ['w', 'b', 'erf'];
  const args = step.kind === 'dense' ? [step.w, step.b, erf] : [step.scale, step.shift, erf];
  step.acts.forEach((a, k) => {
    if (a.name === 'prelu') {
      params.push(`p${k}`);
      args.push(a.alpha);
    }
  });
  const body = step.kind === 'dense' ? denseLoopCode(step) : affineLoopCode(step);
  return makeFunction(params, args, `return function step(x, y, n) {\n${body}\n};`);
}

// Compiles the plan into forward(input, output, n) with scratch buffers for maxRows rows. The input is what the
// network takes (pre-processing already applied). Intermediates are Float32Array: every step rounds to float32.
export function compileDenseStack(plan, maxRows) {
  const steps = plan.map(loopKernel);
  const scratch = plan.slice(0, -1).map((s) => new Float32Array(maxRows * s.outSize));
  return function forward(input, output, n) {
    let x = input;
    for (let l = 0; l < steps.length; l++) {
      const y = l === steps.length - 1 ? output : scratch[l];
      steps[l](x, y, n);
      x = y;
    }
  };
}

// ---------------------------------------------------------------------------------------------------------------
// dense-unrolled: straight-line code for small models, one generated function per model whose body computes a
// whole row with the weights as literals and the activations in locals, so V8 compiles it to register arithmetic
// with no loads of weights or intermediates. Standardization is fused in front. Each step's results are rounded to
// float32 (Math.fround), as the training framework computes in float32.
// Past about a thousand multiply-adds the loops of dense-js are faster in the job's V8 (mini-racer's 12.6: 0.45
// against 0.7 ns per multiply-add at 1,048), and past about 3,000 Node's V8 stops optimizing the generated
// function at all (20x slower): the unrolled code is for small models only.
const MAX_UNROLLED_MACS = 1024;

// Returns forward(rawInput, output, n), or null when the model is too large to unroll. `standardize` is
// {mean, std} per input, or null.
export function compileUnrolled(plan, standardize) {
  const macs = plan.reduce((s, l) => s + (l.kind === 'dense' ? l.inSize * l.outSize : l.inSize), 0);
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
  plan.forEach((step, l) => {
    const outNames = [];
    for (let o = 0; o < step.outSize; o++) {
      const name = `a${l + 1}_${o}`;
      let expr;
      if (step.kind === 'dense') {
        const terms = [lit(step.b[o])];
        for (let i = 0; i < step.inSize; i++) {
          const w = step.w[o * step.inSize + i];
          if (w !== 0) terms.push(`${names[i]} * ${lit(w)}`);
        }
        expr = terms.join(' + ');
      } else {
        expr = `Math.fround(${names[o]} * ${lit(step.scale[o])}) + ${lit(step.shift[o])}`;
      }
      body.push(`let ${name} = Math.fround(${expr});`);
      outNames.push(name);
    }
    const final = l === plan.length - 1;
    step.acts.forEach((act, k) => {
      const param = (o) => (act.name === 'prelu' ? lit(f32(act.alpha[o])) : '');
      body.push(activationCode(act, outNames, param, final && k === step.acts.length - 1));
    });
    names = outNames;
  });
  names.forEach((n, o) => body.push(`y[yi + ${o}] = ${n};`));
  const src = `for (let r = 0, xi = 0, yi = 0; r < n; r++, xi += ${nIn}, yi += ${nOut}) {\n` +
    body.join('\n') + '\n}\nreturn n;';
  if (!src.includes('erf(')) {
    // eslint-disable-next-line no-new-func
    return new Function('x', 'y', 'n', src); // as it always was: the WINE bundle's hot path
  }
  return makeFunction(['erf'], [erf], `return function forward(x, y, n) {\n${src}\n};`);
}
