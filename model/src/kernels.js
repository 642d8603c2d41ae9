// Bundle-level kernels for the fast path. For a small tabular model the TF.js op dispatch (tensor allocation,
// kernel lookup, dispose) costs far more than the arithmetic, so the fast path runs generated JavaScript instead;
// the JSON path and every model these kernels do not cover run TF.js itself, and the self-test compares both
// against the training framework's outputs.
//
// planModel(model) (model/src/plan.js) turns a loaded TF.js layers model into a plan or says which layer keeps
// it off the fast path. compileUnrolled(plan, standardize) generates straight-line code for a whole row (small
// models); compileDenseStack(plan, maxRows) one kernel per step (any size): WebAssembly SIMD for the Dense steps
// (model/src/simd.js), JavaScript loops for the rest.
//
// The plan's format is described in model/src/plan.js.

import { erf, exp, expm1, tanh } from './elementary.js';
import { describePlan, extractDenseStack, planModel } from './plan.js';
import { simdDense } from './simd.js';

export { describePlan, erf, extractDenseStack, planModel };

const SELU_ALPHA = 1.6732632423543772;
const SELU_SCALE = 1.0507009873554805;
const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

// ---------------------------------------------------------------------------------------------------------------
// Activations. Elementwise ones are a JavaScript expression, in double precision, of `v` (a float32 value in a
// double) and `p` (the code of the unit's parameter: PReLU's alpha); the generated code rounds the result to
// float32, except for those marked EXACT, whose result is already a float32 value. Vector ones (softmax,
// log_softmax) are generated over the whole row.
function f32(v) {
  return Math.fround(v);
}

const ACTIVATIONS = {
  relu: (a, v) => (a.max === undefined ? `${v} > 0 ? ${v} : 0`
    : `${v} > 0 ? (${v} < ${lit(f32(a.max))} ? ${v} : ${lit(f32(a.max))}) : 0`),
  leaky_relu: (a, v) => `${v} > 0 ? ${v} : ${lit(f32(a.alpha))} * ${v}`,
  prelu: (a, v, p) => `${v} > 0 ? ${v} : ${p} * ${v}`,
  thresholded_relu: (a, v) => `${v} > ${lit(f32(a.theta))} ? ${v} : 0`,
  elu: (a, v) => `${v} > 0 ? ${v} : expm1(${v})`,
  selu: (a, v) => `${v} > 0 ? ${SELU_SCALE} * ${v} : ${SELU_SCALE * SELU_ALPHA} * expm1(${v})`,
  sigmoid: (a, v) => `1 / (1 + exp(-${v}))`,
  // tf_keras 2.19 and TF.js: clip(0.2 x + 0.5, 0, 1) (Keras 3's x/6 + 0.5 is not what the converter meets).
  hard_sigmoid: (a, v) => `clip01(${lit(f32(0.2))} * ${v} + 0.5)`,
  tanh: (a, v) => `tanh(${v})`,
  softplus: (a, v) => `${v} > 0 ? ${v} + Math.log1p(exp(-${v})) : Math.log1p(exp(${v}))`,
  softsign: (a, v) => `${v} / (1 + (${v} < 0 ? -${v} : ${v}))`,
  swish: (a, v) => `${v} / (1 + exp(-${v}))`,
  mish: (a, v) => `${v} * tanh(${v} > 0 ? ${v} + Math.log1p(exp(-${v})) : Math.log1p(exp(${v})))`,
  gelu: (a, v) => `0.5 * ${v} * (1 + erf(${v} * ${Math.SQRT1_2}))`,
  gelu_tanh: (a, v) => `0.5 * ${v} * (1 + tanh(${SQRT_2_OVER_PI} * (${v} + 0.044715 * ${v} * ${v} * ${v})))`,
};
const EXACT = new Set(['relu', 'thresholded_relu']);
const VECTOR_ACTIVATIONS = new Set(['softmax', 'log_softmax']);

function lit(v) {
  // A double printed as the shortest text that round-trips: exact.
  return Object.is(v, -0) ? '-0' : String(v);
}

// ---------------------------------------------------------------------------------------------------------------
// Code generation shared by both kernels. Values are rounded to float32 by storing them into a Float32Array and
// reading them back, not by Math.fround: in the job's V8 (mini-racer's 12.6) Math.fround costs ~6 ns a call, and
// the unrolled kernels spent most of their time in it (162 against 54 ns a row on a 12 -> 8 -> 1 model; the WINE
// bundle's fast path is 1.3-1.9x faster for it, with the same outputs to the bit; Node's V8 11 runs both alike).

// A scratch float32 slot per rounded value: round(expr) gives the statements that round expr into `name`. Also
// double scratch slots (`u`) for looping over a row's values (below).
class Rounder {
  constructor() {
    this.slots = 0;
    this.doubles = 0;
  }

  round(name, expr, declare = 'const') {
    const k = this.slots++;
    return `t[${k}] = ${expr}; ${declare ? declare + ' ' : ''}${name} = t[${k}];`;
  }

  // Statements computing `expr` of v (a JavaScript expression) for each of `inputs` (expressions) in a loop, and
  // the expressions of the results (double scratch slots). V8 inlines a call to exp or tanh (elementary.js) at a
  // few call sites of an unrolled function only, and pays about as much for a call as for Math's own; a loop has
  // one call site (a kernel like activation_layers': 343 against 717 ns a row with a call per unit).
  loop(inputs, expr) {
    const k = this.doubles;
    this.doubles += inputs.length;
    const code = [
      ...inputs.map((e, o) => `u[${k + o}] = ${e};`),
      `for (let j = ${k}; j < ${k + inputs.length}; j++) { const v = u[j]; u[j] = ${expr('v')}; }`,
    ].join('\n');
    return { code, results: inputs.map((_, o) => `u[${k + o}]`) };
  }

  scratch() {
    return [new Float32Array(Math.max(1, this.slots)), new Float64Array(Math.max(1, this.doubles))];
  }
}

// Activations that call exp, expm1, tanh or erf: in a loop when a row has more than one value to apply them to.
const LOOPED = new Set(['elu', 'selu', 'sigmoid', 'tanh', 'softplus', 'swish', 'mish', 'gelu', 'gelu_tanh']);

// Statements applying `act` in place to the row's values `names` (locals): `param(o)` is the code of unit o's
// parameter; `final`: the values go straight into the float32 output, whose store rounds them.
function activationCode(act, names, param, rounder, final) {
  const looped = names.length > 1;
  if (VECTOR_ACTIVATIONS.has(act.name)) {
    const lines = [`let m = ${names[0]};`];
    for (const n of names.slice(1)) lines.push(`if (${n} > m) m = ${n};`);
    const set = (n, e) => (final ? `${n} = ${e};` : rounder.round(n, e, ''));
    let exps = names.map((n) => `exp(${n} - m)`);
    if (looped) {
      const { code, results } = rounder.loop(names.map((n) => `${n} - m`), (v) => `exp(${v})`);
      lines.push(code);
      exps = results;
    }
    if (act.name === 'softmax') {
      names.forEach((n, o) => lines.push(`${n} = ${exps[o]};`));
      lines.push(`const sum = ${names.join(' + ')};`);
      for (const n of names) lines.push(set(n, `${n} / sum`));
    } else {
      lines.push(`const lse = m + Math.log(${exps.join(' + ')});`);
      for (const n of names) lines.push(set(n, `${n} - lse`));
    }
    return '{\n' + lines.join('\n') + '\n}';
  }
  const expr = ACTIVATIONS[act.name];
  if (!expr) throw new Error('unsupported activation ' + act.name);
  if (looped && LOOPED.has(act.name)) {
    const { code, results } = rounder.loop(names, (v) => expr(act, v, ''));
    return code + '\n' + names.map((n, o) => rounder.round(n, results[o], '')).join('\n');
  }
  return names.map((n, o) => {
    const e = expr(act, n, param(o));
    return EXACT.has(act.name) ? `${n} = ${e};` : rounder.round(n, e, '');
  }).join('\n');
}

// The generated code calls these by name. V8 inlines them, where Math's are calls in the job's V8: exp, expm1,
// tanh (elementary.js) and also Math.abs (4 ns), Math.min and Math.max (5-6 ns each), which clip01 and softsign's
// expression replace (hard_sigmoid and softsign 6-15x faster in a loop; the same results, NaN included).
const clip01 = (h) => (h < 0 ? 0 : h > 1 ? 1 : h);
const HELPERS = { clip01, erf, exp, expm1, tanh };

function makeFunction(params, args, body) {
  // eslint-disable-next-line no-new-func
  return new Function(...Object.keys(HELPERS), ...params, body)(...Object.values(HELPERS), ...args);
}

// ---------------------------------------------------------------------------------------------------------------
// dense-js: one kernel per step. Its Dense steps run in WebAssembly (simd.js) up to a size; otherwise, and where V8
// has no WebAssembly SIMD, a generated loop kernel over typed arrays computes two rows and four outputs at a time
// (eight accumulators: each weight and input loaded once for two and four products), 2-2.5x faster than one dot
// product at a time on a 128 x 112 layer; each output still sums in input order from its bias, so the results are
// the same.

// Code applying the step's activations to the row of y at offset `yr`, in place: y is float32, so each store
// rounds.
function rowActivations(acts, outSize, yr) {
  const lines = [];
  const at = `y[${yr} + o]`;
  const each = (stmt) => `for (let o = 0; o < ${outSize}; o++) ${stmt}`;
  acts.forEach((act, k) => {
    if (act.name === 'softmax') {
      lines.push('{', 'let m = -Infinity;', each(`if (${at} > m) m = ${at};`), 'let sum = 0;');
      lines.push(each(`{ const e = exp(${at} - m); ${at} = e; sum += e; }`), each(`${at} /= sum;`), '}');
    } else if (act.name === 'log_softmax') {
      lines.push('{', 'let m = -Infinity;', each(`if (${at} > m) m = ${at};`), 'let sum = 0;');
      lines.push(each(`sum += exp(${at} - m);`), 'const lse = m + Math.log(sum);', each(`${at} -= lse;`), '}');
    } else {
      lines.push(each(`{ const v = ${at}; ${at} = ${ACTIVATIONS[act.name](act, 'v', `p${k}[o]`)}; }`));
    }
  });
  return lines.join('\n');
}

function denseLoopCode(step) {
  const { inSize: I, outSize: O, acts } = step;
  const quads = O - (O % 4);
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
    'y[y0 + o] = a0; y[y0 + o + 1] = a1; y[y0 + o + 2] = a2; y[y0 + o + 3] = a3;',
    'y[y1 + o] = c0; y[y1 + o + 1] = c1; y[y1 + o + 2] = c2; y[y1 + o + 3] = c3;',
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
    // Two roundings, as Keras: the product (stored), then the sum (stored again).
    `for (let o = 0; o < ${O}; o++) { y[y0 + o] = x[y0 + o] * w[o]; y[y0 + o] += b[o]; }`,
    rowActivations(acts, O, 'y0'),
    '}',
  ].join('\n');
}

function loopKernel(step) {
  const params = ['w', 'b'];
  const args = step.kind === 'dense' ? [step.w, step.b] : [step.scale, step.shift];
  step.acts.forEach((a, k) => {
    if (a.name === 'prelu') {
      params.push(`p${k}`);
      args.push(a.alpha);
    }
  });
  const body = step.kind === 'dense' ? denseLoopCode(step) : affineLoopCode(step);
  return makeFunction(params, args, `return function step(x, y, n) {\n${body}\n};`);
}

// A step's activations (or its activations but a leading ReLU, applied by simd.js) over n rows of y, in place.
function activationKernel(step, acts) {
  const params = [];
  const args = [];
  acts.forEach((a, k) => {
    if (a.name === 'prelu') {
      params.push(`p${k}`);
      args.push(a.alpha);
    }
  });
  const O = step.outSize;
  const body = `for (let r = 0, y0 = 0; r < n; r++, y0 += ${O}) {\n${rowActivations(acts, O, 'y0')}\n}`;
  return makeFunction(params, args, `return function activations(y, n) {\n${body}\n};`);
}

// Compiles the plan into forward(input, output, n) with scratch buffers for maxRows rows. The input is what the
// network takes (pre-processing already applied). Intermediates are float32: every step rounds to float32.
// Dense steps of up to simd.MAX_MACS multiply-adds run in WebAssembly SIMD where V8 has it (simd.js: the same
// results to the bit, 3-4x faster), over one WebAssembly memory that holds every step's rows; the other steps and
// the activations run in JavaScript over the same memory. {simd: false} runs every step in JavaScript (tests).
export function compileDenseStack(plan, maxRows, { simd: useSimd = true } = {}) {
  const widths = [plan[0].inSize, ...plan.map((s) => s.outSize)];
  const simd = useSimd ? simdDense(plan, widths.reduce((sum, w) => sum + maxRows * w * 4, 0)) : null;
  if (simd === null) return jsStack(plan, maxRows);
  const offsets = []; // byte addresses of the rows before each step and after the last
  for (let k = 0, at = simd.base; k < widths.length; at += maxRows * widths[k] * 4, k++) offsets.push(at);
  const rows = widths.map((w, k) => new Float32Array(simd.memory.buffer, offsets[k], maxRows * w));
  const steps = plan.map((step, l) => {
    const dense = simd.dense[l];
    const [x, y] = [rows[l], rows[l + 1]];
    if (dense === null) {
      const kernel = loopKernel(step);
      return (n) => kernel(x, y, n);
    }
    const { run, relu } = dense;
    const acts = relu ? step.acts.slice(1) : step.acts;
    const [xAt, yAt] = [offsets[l], offsets[l + 1]];
    if (acts.length === 0) return (n) => run(n, xAt, yAt);
    const activations = activationKernel(step, acts);
    return (n) => {
      run(n, xAt, yAt);
      activations(y, n);
    };
  });
  const [nIn, nOut] = [widths[0], widths[widths.length - 1]];
  const [first, last] = [rows[0], rows[rows.length - 1]];
  return function forward(input, output, n) {
    first.set(input.length === n * nIn ? input : input.subarray(0, n * nIn));
    for (let l = 0; l < steps.length; l++) steps[l](n);
    output.set(last.length === n * nOut ? last : last.subarray(0, n * nOut));
  };
}

// dense-js without WebAssembly: every step a loop kernel over Float32Array scratch buffers.
function jsStack(plan, maxRows) {
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
// with no loads of weights. Standardization is fused in front. Each step's results are rounded to float32, as the
// training framework computes in float32.

// Past about a thousand multiply-adds the loops of dense-js are as fast or faster in the job's V8 (mini-racer's
// 12.6: 0.42 against 0.60 ns per multiply-add at 1,304; 0.35 against 0.43 the other way at 1,048), and past about
// 3,000 Node's V8 stops optimizing the generated function at all (20x slower): unrolled code is for small models.
const MAX_UNROLLED_MACS = 1024;

// Returns forward(rawInput, output, n), or null when the model is too large to unroll. `standardize` is
// {mean, std} per input, or null.
export function compileUnrolled(plan, standardize) {
  const macs = plan.reduce((s, l) => s + (l.kind === 'dense' ? l.inSize * l.outSize : l.inSize), 0);
  if (macs > MAX_UNROLLED_MACS) return null;
  const nIn = plan[0].inSize;
  const nOut = plan[plan.length - 1].outSize;
  const rounder = new Rounder();
  const body = [];
  let names = [];
  for (let i = 0; i < nIn; i++) {
    const v = `x[xi + ${i}]`;
    const name = `a0_${i}`;
    // Division, not a multiplication by 1/std: the same rounding as training's (x - mean) / std.
    body.push(standardize
      ? rounder.round(name, `(${v} - ${lit(standardize.mean[i])}) / ${lit(standardize.std[i])}`)
      : `const ${name} = ${v};`);
    names.push(name);
  }
  plan.forEach((step, l) => {
    const outNames = [];
    for (let o = 0; o < step.outSize; o++) {
      const name = `a${l + 1}_${o}`;
      if (step.kind === 'dense') {
        const terms = [lit(step.b[o])];
        for (let i = 0; i < step.inSize; i++) {
          const w = step.w[o * step.inSize + i];
          if (w !== 0) terms.push(`${names[i]} * ${lit(w)}`);
        }
        body.push(rounder.round(name, terms.join(' + '), 'let'));
      } else {
        body.push(rounder.round(`p${l}_${o}`, `${names[o]} * ${lit(step.scale[o])}`));
        body.push(rounder.round(name, `p${l}_${o} + ${lit(step.shift[o])}`, 'let'));
      }
      outNames.push(name);
    }
    const final = l === plan.length - 1;
    step.acts.forEach((act, k) => {
      const param = (o) => (act.name === 'prelu' ? lit(f32(act.alpha[o])) : '');
      body.push(activationCode(act, outNames, param, rounder, final && k === step.acts.length - 1));
    });
    names = outNames;
  });
  names.forEach((n, o) => body.push(`y[yi + ${o}] = ${n};`));
  const src = `for (let r = 0, xi = 0, yi = 0; r < n; r++, xi += ${nIn}, yi += ${nOut}) {\n` +
    body.join('\n') + '\n}\nreturn n;';
  return makeFunction(['t', 'u'], rounder.scratch(), `return function forward(x, y, n) {\n${src}\n};`);
}
