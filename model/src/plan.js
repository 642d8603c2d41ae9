// The fast path's plan for a loaded TF.js layers model: planModel(model) returns {plan, reason}, the steps the
// generated kernels compute (model/src/kernels.js) or null and the reason, naming the layer, why the model stays
// on TF.js. The kernels, not this module, decide how each step is computed.
//
// The plan is an array of steps, each mapping a row vector of inSize float32 values to outSize values:
//   {kind: 'dense', inSize, outSize, w, b, acts, layers}   w: Float64Array(outSize * inSize), w[o * inSize + i];
//                                                          b: Float64Array(outSize)
//   {kind: 'affine', inSize, outSize, scale, shift, acts, layers}   y[i] = x[i] * scale[i] + shift[i], rounded
//                                                          to float32 after the product and after the sum, as
//                                                          Keras' BatchNormalization (inSize === outSize;
//                                                          scale, shift: Float64Array)
// then the activations `acts` in order, each {name, ...parameters} (kernels.js' ACTIVATIONS; e.g. {name: 'relu',
// max: 6}, {name: 'leaky_relu', alpha: 0.3}, {name: 'prelu', alpha: Float64Array(outSize)}). `layers` names the Keras
// layers the step computes. Every step's result, and every activation's, is rounded to float32, as the training
// framework computes in float32. A BatchNormalization folds into the Dense next to it where that cannot move the
// result by more than rounding (FOLD_MAX_SHIFT), else it is an affine step.

// Layers that are the identity at inference.
const IDENTITY = new Set([
  'InputLayer', 'Dropout', 'SpatialDropout1D', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout',
]);

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

const f32 = Math.fround;

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

