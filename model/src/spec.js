// The model spec (docs/model-spec.md), validated and normalized once: typed inputs, feature blocks with their
// steps, the output kind and the extras. Both the build (in Node, before bundling) and the bundle (when it is
// evaluated) run `normalizeSpec`, so a spec the build accepted is the spec the bundle serves.
import { SpecError, isNum, isObj, known } from './errors.js';
import { RESERVED, normalizeOutput } from './outputs.js';
import { parseTimestamp } from './time.js';

export { SpecError };

const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
const TYPES = ['float', 'int', 'bool', 'string', 'timestamp'];
const DATEPARTS = ['year', 'month', 'day', 'weekday', 'hour', 'minute', 'dayofyear', 'epoch_days'];
const PARAMS = {
  impute: ['value', 'strategy'],
  clip: ['min', 'max'],
  log1p: [],
  standardize: ['mean', 'std'],
  minmax: ['min', 'max'],
  bucketize: ['boundaries', 'quantiles'],
  vocabulary: ['values', 'oov', 'max_size', 'min_count'],
  onehot: ['size'],
  datepart: ['part'],
};
// `kernel` is the build's --kernel; `legacy` what the build keeps of an app.json (specFromApp).
const TOP = ['name', 'version', 'inputs', 'features', 'output', 'extras', 'hooks', 'maxBatch', 'selfTest', 'samples',
  'kernel', 'legacy'];
const q = (s) => "'" + s + "'";

// A timestamp given in a spec (default, impute value): ms or ISO text.
function timestampValue(v, where) {
  const ms = typeof v === 'string' ? parseTimestamp(v) : v;
  if (!isNum(ms)) throw new SpecError(`${where}: ${JSON.stringify(v)} is not a timestamp (ISO-8601 text or ms)`);
  return ms;
}

// A constant of an input's type, as the float64 the columns carry (strings stay strings).
function typedValue(type, v, where) {
  switch (type) {
    case 'string':
      if (typeof v !== 'string') throw new SpecError(`${where}: ${JSON.stringify(v)} is not a string`);
      return v;
    case 'timestamp':
      return timestampValue(v, where);
    case 'bool':
      if (typeof v === 'boolean') return v ? 1 : 0;
      if (v === 0 || v === 1) return v;
      throw new SpecError(`${where}: ${JSON.stringify(v)} is not a boolean`);
    case 'int':
      if (!Number.isInteger(v)) throw new SpecError(`${where}: ${JSON.stringify(v)} is not an integer`);
      return v;
    default:
      if (!isNum(v)) throw new SpecError(`${where}: ${JSON.stringify(v)} is not a finite number`);
      return v;
  }
}

function normalizeInput(inp, i, seen) {
  const where = `inputs[${i}]`;
  if (!isObj(inp)) throw new SpecError(`${where} must be an object {name, type}`);
  if (typeof inp.name !== 'string' || !NAME.test(inp.name)) {
    throw new SpecError(`${where}: name ${JSON.stringify(inp.name)} must match [A-Za-z_][A-Za-z0-9_.-]*`);
  }
  if (seen.has(inp.name)) throw new SpecError(`${where}: duplicate input name ${q(inp.name)}`);
  seen.add(inp.name);
  if (!TYPES.includes(inp.type)) {
    throw new SpecError(`input ${q(inp.name)}: unknown type ${JSON.stringify(inp.type)} (known: ${TYPES.join(', ')})`);
  }
  known(inp, ['name', 'type', 'nullable', 'default', 'derived'], `input ${q(inp.name)}`);
  for (const flag of ['nullable', 'derived']) {
    if (inp[flag] !== undefined && typeof inp[flag] !== 'boolean') {
      throw new SpecError(`input ${q(inp.name)}: ${flag} must be true or false`);
    }
  }
  const hasDefault = inp.default !== undefined && inp.default !== null;
  if (hasDefault && inp.nullable === false) {
    throw new SpecError(`input ${q(inp.name)}: a default makes it nullable; drop "nullable": false`);
  }
  return {
    name: inp.name,
    type: inp.type,
    nullable: Boolean(inp.nullable) || hasDefault,
    hasDefault,
    default: hasDefault ? typedValue(inp.type, inp.default, `input ${q(inp.name)}: default`) : null,
    derived: Boolean(inp.derived),
  };
}

// One step, checked against the kind of value it receives. `state` = {kind, size?, columns?}: kind is
// 'number', 'index' (0..size-1, with the one-hot column suffixes), 'string' or 'timestamp'.
function normalizeStep(step, state, where) {
  if (!isObj(step) || Object.keys(step).length !== 1) {
    throw new SpecError(`${where} must be an object with one key, the step's name`);
  }
  const op = Object.keys(step)[0];
  const p = step[op] === null || step[op] === undefined ? {} : step[op];
  if (!isObj(p)) throw new SpecError(`${where} (${op}): parameters must be an object`);
  const w = `${where} (${op})`;
  if (PARAMS[op]) known(p, PARAMS[op], w);
  const needNumber = () => {
    if (state.kind !== 'number' && state.kind !== 'index') {
      throw new SpecError(`${w} works on numbers, but the value here is a ${state.kind}` +
        (state.kind === 'string' ? ' (a string needs vocabulary first)' : ' (a timestamp needs datepart first)'));
    }
  };
  const fitted = (name) => {
    if (p[name] === undefined || p[name] === null) throw new SpecError(`${w}: missing fitted parameter ${q(name)}`);
  };
  switch (op) {
    case 'impute': {
      if (p.strategy !== undefined) {
        const ok = ['mean', 'median', 'most_frequent'];
        if (!ok.includes(p.strategy)) throw new SpecError(`${w}: unknown strategy ${JSON.stringify(p.strategy)}`);
        if (p.strategy !== 'most_frequent' && !(state.kind === 'number' && !state.bool)) {
          throw new SpecError(`${w}: strategy ${q(p.strategy)} needs numbers, the value here is a ${state.kind}`);
        }
      }
      if (p.value === undefined || p.value === null) {
        throw new SpecError(`${w}: missing fitted parameter 'value'` + (p.strategy ? ` (strategy ${q(p.strategy)})` : ''));
      }
      const type = state.kind === 'string' ? 'string' : state.kind === 'timestamp' ? 'timestamp' :
        state.bool ? 'bool' : 'float';
      const value = typedValue(type, p.value, `${w}: value`);
      if (state.kind === 'index' && !(Number.isInteger(value) && value >= 0 && value < state.size)) {
        throw new SpecError(`${w}: value ${value} is not an index in 0..${state.size - 1}`);
      }
      return [{ op, value }, state];
    }
    case 'clip': {
      needNumber();
      const hasMin = p.min !== undefined && p.min !== null;
      const hasMax = p.max !== undefined && p.max !== null;
      if (!hasMin && !hasMax) throw new SpecError(`${w}: needs min and/or max`);
      if ((hasMin && !isNum(p.min)) || (hasMax && !isNum(p.max))) throw new SpecError(`${w}: min and max must be numbers`);
      if (hasMin && hasMax && p.min > p.max) throw new SpecError(`${w}: min ${p.min} > max ${p.max}`);
      return [{ op, min: hasMin ? p.min : -Infinity, max: hasMax ? p.max : Infinity }, { kind: 'number' }];
    }
    case 'log1p':
      needNumber();
      return [{ op }, { kind: 'number' }];
    case 'standardize':
      needNumber();
      fitted('mean');
      fitted('std');
      if (!isNum(p.mean) || !isNum(p.std)) throw new SpecError(`${w}: mean and std must be numbers`);
      if (!(p.std > 0)) throw new SpecError(`${w}: std must be > 0, not ${p.std} (a constant input carries nothing)`);
      return [{ op, mean: p.mean, std: p.std }, { kind: 'number' }];
    case 'minmax':
      needNumber();
      fitted('min');
      fitted('max');
      if (!isNum(p.min) || !isNum(p.max)) throw new SpecError(`${w}: min and max must be numbers`);
      if (!(p.min < p.max)) throw new SpecError(`${w}: min must be below max, not ${p.min}..${p.max}`);
      return [{ op, min: p.min, max: p.max }, { kind: 'number' }];
    case 'bucketize': {
      needNumber();
      fitted('boundaries');
      const b = p.boundaries;
      if (!Array.isArray(b) || b.length === 0 || !b.every(isNum)) {
        throw new SpecError(`${w}: boundaries must be a non-empty list of numbers`);
      }
      for (let i = 1; i < b.length; i++) {
        if (!(b[i] > b[i - 1])) throw new SpecError(`${w}: boundaries must ascend (${b[i - 1]}, ${b[i]})`);
      }
      const suffixes = [];
      for (let i = 0; i <= b.length; i++) suffixes.push('#' + i);
      return [{ op, boundaries: b.slice() }, { kind: 'index', size: b.length + 1, suffixes }];
    }
    case 'vocabulary': {
      if (state.kind !== 'string') throw new SpecError(`${w} works on strings, the value here is a ${state.kind}`);
      fitted('values');
      const v = p.values;
      if (!Array.isArray(v) || v.length === 0 || !v.every((s) => typeof s === 'string')) {
        throw new SpecError(`${w}: values must be a non-empty list of strings`);
      }
      if (new Set(v).size !== v.length) throw new SpecError(`${w}: values must be distinct`);
      const oov = p.oov === undefined ? 'error' : p.oov;
      if (oov !== 'bucket' && oov !== 'error') throw new SpecError(`${w}: oov must be 'bucket' or 'error'`);
      const suffixes = v.map((s) => '=' + s);
      if (oov === 'bucket') suffixes.push('=<oov>');
      return [{ op, values: v.slice(), oov }, { kind: 'index', size: suffixes.length, suffixes }];
    }
    case 'onehot': {
      if (state.kind !== 'index') {
        throw new SpecError(`${w} needs an index (after vocabulary or bucketize), the value here is a ${state.kind}`);
      }
      if (p.size !== undefined && p.size !== state.size) {
        throw new SpecError(`${w}: size ${p.size} does not match the ${state.size} indices of the step before`);
      }
      return [{ op, size: state.size }, { kind: 'onehot', size: state.size, suffixes: state.suffixes }];
    }
    case 'datepart':
      if (state.kind !== 'timestamp') throw new SpecError(`${w} works on timestamps, the value here is a ${state.kind}`);
      if (!DATEPARTS.includes(p.part)) {
        throw new SpecError(`${w}: part must be one of ${DATEPARTS.join(', ')}`);
      }
      return [{ op, part: p.part }, { kind: 'number' }];
    default:
      throw new SpecError(`${where}: unknown step ${q(op)} (known: impute, clip, log1p, standardize, minmax, ` +
        'bucketize, vocabulary, onehot, datepart)');
  }
}

function normalizeBlock(block, i, inputs) {
  const where = `features[${i}]`;
  if (!isObj(block)) throw new SpecError(`${where} must be an object {input, steps}`);
  known(block, ['input', 'name', 'steps'], where);
  const input = inputs.find((x) => x.name === block.input);
  if (!input) throw new SpecError(`${where}: input ${JSON.stringify(block.input)} is not declared in inputs`);
  const name = block.name === undefined ? input.name : block.name;
  if (typeof name !== 'string' || name === '') throw new SpecError(`${where}: name must be a non-empty string`);
  const steps = block.steps === undefined ? [] : block.steps;
  if (!Array.isArray(steps)) throw new SpecError(`${where} (${name}): steps must be a list`);
  let state = input.type === 'string' || input.type === 'timestamp' ? { kind: input.type } :
    { kind: 'number', bool: input.type === 'bool' };
  const out = [];
  steps.forEach((s, k) => {
    if (state.kind === 'onehot') throw new SpecError(`${where} (${name}): step ${k + 1} comes after onehot, which must be last`);
    const [step, next] = normalizeStep(s, state, `${where} (${name}) step ${k + 1}`);
    out.push(step);
    state = next;
  });
  if (state.kind === 'string') {
    throw new SpecError(`${where} (${name}): a string input must reach a number through vocabulary`);
  }
  if (state.kind === 'timestamp') {
    throw new SpecError(`${where} (${name}): a timestamp input must reach a number through datepart`);
  }
  const columns = state.kind === 'onehot' ? state.suffixes.map((s) => name + s) : [name];
  return { index: i, input: input.name, name, steps: out, columns, width: columns.length };
}

function normalizeRecords(block, what, needExpected) {
  if (!isObj(block)) throw new SpecError(`${what} must be an object`);
  const { records } = block;
  if (!Array.isArray(records) || records.length === 0) throw new SpecError(`${what}.records must be a non-empty list`);
  records.forEach((r, i) => {
    if (!isObj(r)) throw new SpecError(`${what}.records[${i}] must be an object keyed by input name`);
  });
  if (needExpected) {
    const e = block.expected;
    if (!Array.isArray(e) || e.length !== records.length || !e.every((row) => Array.isArray(row) && row.every(isNum))) {
      throw new SpecError(`${what}: expected must hold one list of numbers per record`);
    }
    if (!(isNum(block.tolerance) && block.tolerance > 0)) throw new SpecError(`${what}.tolerance must be > 0`);
  }
}

// spec (parsed spec.json) -> the normalized spec; throws SpecError with one line naming what is wrong.
export function normalizeSpec(spec) {
  if (!isObj(spec)) throw new SpecError('the spec must be a JSON object');
  known(spec, TOP, 'spec');
  if (typeof spec.name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(spec.name)) {
    throw new SpecError('name must match [A-Za-z0-9][A-Za-z0-9._-]*');
  }
  if (!Array.isArray(spec.inputs) || spec.inputs.length === 0) throw new SpecError('inputs must be a non-empty list');
  const seen = new Set();
  const inputs = spec.inputs.map((inp, i) => normalizeInput(inp, i, seen));
  const raw = inputs.filter((x) => !x.derived);
  if (raw.length === 0) throw new SpecError('inputs: at least one input must be given by the job (not derived)');
  const derived = inputs.filter((x) => x.derived);
  if (derived.length && !spec.hooks) {
    throw new SpecError(`input ${q(derived[0].name)} is derived, but the spec names no hooks file to derive it`);
  }
  if (!Array.isArray(spec.features) || spec.features.length === 0) throw new SpecError('features must be a non-empty list');
  const blocks = spec.features.map((b, i) => normalizeBlock(b, i, inputs));
  const names = [];
  const owner = new Map();
  let offset = 0;
  for (const b of blocks) {
    b.offset = offset;
    offset += b.width;
    for (const c of b.columns) {
      if (owner.has(c)) throw new SpecError(`features[${b.index}]: column ${q(c)} is also made by features[${owner.get(c)}]`);
      owner.set(c, b.index);
      names.push(c);
    }
  }
  if (spec.output === undefined) throw new SpecError('output is missing (kind: multiclass, binary, regression or multi)');
  const output = normalizeOutput(spec.output, 'output', true, spec.legacy ? 1 : 2);
  const extras = spec.extras === undefined ? [] : spec.extras;
  if (!Array.isArray(extras)) throw new SpecError('extras must be a list of {name, type}');
  const extraNames = new Set();
  const heads = output.kind === 'multi' ? output.heads.map((h) => h.name) : [];
  extras.forEach((e, i) => {
    if (!isObj(e) || typeof e.name !== 'string' || !NAME.test(e.name)) {
      throw new SpecError(`extras[${i}]: needs a name matching [A-Za-z_][A-Za-z0-9_.-]*`);
    }
    known(e, ['name', 'type'], `extras[${i}]`);
    if (RESERVED.includes(e.name) || heads.includes(e.name)) {
      throw new SpecError(`extras[${i}]: ${q(e.name)} is a field the job writes itself`);
    }
    if (extraNames.has(e.name)) throw new SpecError(`extras[${i}]: duplicate extra ${q(e.name)}`);
    extraNames.add(e.name);
    if (e.type !== 'float' && e.type !== 'string') throw new SpecError(`extras[${i}] (${e.name}): type must be float or string`);
  });
  if (spec.hooks !== undefined && spec.hooks !== null && typeof spec.hooks !== 'string') {
    throw new SpecError('hooks must be the path of an ES module in the model project');
  }
  const maxBatch = spec.maxBatch === undefined ? 4096 : spec.maxBatch;
  if (!Number.isInteger(maxBatch) || maxBatch < 1 || maxBatch > 1048576) {
    throw new SpecError('maxBatch must be an integer in 1..1048576');
  }
  if (spec.selfTest === undefined) throw new SpecError('selfTest is missing ({records, expected, tolerance})');
  normalizeRecords(spec.selfTest, 'selfTest', true);
  spec.selfTest.expected.forEach((row, i) => {
    if (row.length !== output.width) {
      throw new SpecError(`selfTest.expected[${i}] has ${row.length} values, the output has ${output.width} ` +
        `(${output.columns.join(', ')})`);
    }
  });
  if (spec.samples !== undefined && spec.samples !== null) {
    normalizeRecords(spec.samples, 'samples', false);
    const f = spec.samples.features;
    if (!Array.isArray(f) || f.length !== spec.samples.records.length) {
      throw new SpecError('samples.features must hold one row per record');
    }
    if (spec.samples.names !== undefined && !Array.isArray(spec.samples.names)) {
      throw new SpecError('samples.names must be a list of feature names');
    }
  }
  return {
    name: spec.name,
    version: spec.version === undefined || spec.version === null ? undefined : String(spec.version),
    inputs,
    raw,
    derived,
    blocks,
    featureNames: names,
    width: offset,
    output,
    extras: extras.map((e) => ({ name: e.name, type: e.type })),
    hooks: spec.hooks || null,
    maxBatch,
    kernel: spec.kernel,
    legacy: spec.legacy || null,
  };
}

// A legacy app.json (contract 1) as a spec: float inputs that may not be null, a standardize step per input
// when given, a multiclass output; `legacy` keeps what contract 1 names differently (outputs vs labels).
export function specFromApp(app) {
  const std = app.preprocess && app.preprocess.standardize;
  if (std && (!Array.isArray(std.mean) || !Array.isArray(std.std) || std.mean.length !== app.inputs.length ||
    std.std.length !== app.inputs.length)) {
    throw new SpecError('app.json: standardize.mean/std must have one entry per input');
  }
  const labels = app.labels || app.outputs;
  const spec = {
    name: app.name,
    version: app.version,
    inputs: app.inputs.map((name) => ({ name, type: 'float' })),
    features: app.inputs.map((name, i) => ({
      input: name,
      steps: std ? [{ standardize: { mean: std.mean[i], std: std.std[i] } }] : [],
    })),
    output: { kind: 'multiclass', labels },
    selfTest: {
      records: app.selfTest.inputs.map((row) => Object.fromEntries(app.inputs.map((n, i) => [n, row[i]]))),
      expected: app.selfTest.expected,
      tolerance: app.selfTest.tolerance,
    },
    legacy: { outputs: app.outputs.slice(), labels: labels.slice() },
  };
  if (app.maxBatch !== undefined) spec.maxBatch = app.maxBatch;
  if (app.kernel !== undefined) spec.kernel = app.kernel;
  return spec;
}
