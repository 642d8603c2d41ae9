// The declarative pre-processing (docs/model-spec.md, "Features"), compiled once from the normalized spec into
// generated row loops. A record's units: the typing of each raw input, the settling of each input (defaults,
// nulls), each feature block (a vocabulary lookup on the UTF-8 bytes, the numeric steps, the store into the
// float32 feature matrix). Without a prepare hook (`fused`) a loop runs all the units of a few inputs, input by
// input: no closure, no intermediate column, each value in a local from its column to the feature matrix. With
// one, `typing` fills the typed columns prepare sees and `rest` does the rest from them. The first error of a
// record in the stages' order (model/spec.py's) wins whatever order the loops run in: each error carries its
// rank in that order (compileFeatures).
//
// Measured in mini-racer's V8 (12.6; bench/preprocess.py's 9 inputs -> 27 features, ns a row): 360-490 for the
// stages as closures over intermediate columns, 35 in the generated loop (55-60 on data that does not repeat,
// which the branch predictor cannot learn). Much of the difference was Math.*: in this V8 Math.imul, Math.floor
// and Math.fround cost 4-8 ns a call (TurboFan inlines none of them under mini-racer's --single-threaded), so the
// hot code calls none (int32 arithmetic for hashes and date parts, `| 0` for floors of small quotients).
//
// Numerics, as the Python side (model/spec.py) computes them: each block in float64 in step order, rounded to
// float32 once, when its value is stored into the Float32Array feature matrix. NaN stands for null.
import { utf8Encode } from './platform.js';
import { CIVIL_TABLE_PARTS, DATEPARTS, DATE_INT, civilDays, datepartCode, parseTimestamp } from './time.js';
import { ByteVocab, INLINE_VOCAB_BYTES, decodeRange, vocabCode } from './vocab.js';

const q = (s) => "'" + s + "'";
export const show = (v) => (typeof v === 'string' || (typeof v === 'object' && v !== null) ? JSON.stringify(v) : String(v));

function lit(v) {
  // The shortest text that reads back as the same double: exact.
  if (v === Infinity) return 'Infinity';
  if (v === -Infinity) return '-Infinity';
  return Object.is(v, -0) ? '-0' : String(v);
}

// |x| from here on rounds to an infinite float32 (2^128 - 2^103).
const F32_OVERFLOW = 3.4028235677973366e38;

// Column `valid` codes: 1 = present; 2 = present but not of the input's type (JSON records and prepare's
// replacements only; the message is in the column's `typeErrors`, a Map row -> message); anything else = null.
export const PRESENT = 1;
export const MISTYPED = 2;

// ---- code generation --------------------------------------------------------------------------------------

// The constants of the generated functions (messages, vocabularies, boundaries, the civil table), each a local
// `k<i>` of a function that uses it, as `show`, `decodeRange` and `floor` (Math.floor, for the cold paths).
class Constants {
  constructor() {
    this.h = { show, decodeRange, floor: Math.floor };
    this.count = 0;
  }

  add(value) {
    const k = 'k' + this.count++;
    this.h[k] = value;
    return k;
  }

  // The generated function's source (which refers to the constants by name) as a function.
  compile(src) {
    const names = new Set(src.match(/\b(k\d+|show|decodeRange|floor)\b/g));
    // eslint-disable-next-line no-new-func
    return new Function('h', `const { ${[...names].join(', ')} } = h;\n${src}`)(this.h);
  }
}

// A unit is `code` for one row `i` (feature row at `o`) that reads and writes `v<j>` (the value of numeric input
// j) or reads the string columns' arrays. `uses`: the numeric inputs whose value it reads or writes; `sets`:
// those it writes; `strings`: the string inputs whose arrays it reads; `types`: the input whose value it takes
// from the column (a typing unit).

// The typing of raw input j from its column: `v<j>` = the value, or NaN for a null or a value not of its type.
function typingUnit(input, j, k, rank) {
  const prefix = k.add(`input ${q(input.name)} is `);
  if (input.type === 'string') {
    return {
      code: `if (valid${j}[i] === ${MISTYPED} && te${j} !== null) fail(i, te${j}.get(i), ${rank});`,
      uses: [], sets: [], strings: [j],
    };
  }
  const v = `v${j}`;
  const bad = (why) => `{ if (${v} === ${v}) fail(i, ${prefix} + show(${v}) + '${why}', ${rank}); ${v} = NaN; }`;
  let check;
  switch (input.type) {
    case 'int':
      // (v | 0) !== v only for a fraction or |v| >= 2^31: Math.floor (slow here) only then.
      check = `if (${v} - ${v} !== 0) ${bad(', not a finite number')} ` +
        `else if ((${v} | 0) !== ${v} && floor(${v}) !== ${v}) ${bad(', not an integer')}`;
      break;
    case 'bool':
      // Zero for 0 and 1 only (NaN, infinities and anything else are not): one test, where `v !== 0 && v !== 1`
      // costs a misprediction on every other row of random booleans (6.5 ns a row against 2.5).
      check = `if (${v} * (${v} - 1) !== 0) ${bad(', not a boolean')}`;
      break;
    case 'timestamp':
      check = `if (${v} - ${v} !== 0) ${bad(', not a finite timestamp')}`;
      break;
    default:
      check = `if (${v} - ${v} !== 0) ${bad(', not a finite number')}`;
  }
  return {
    code: `if (valid${j}[i] === ${PRESENT}) { ${v} = num${j}[i]; ${check} } ` +
      `else { ${v} = NaN; if (valid${j}[i] === ${MISTYPED} && te${j} !== null) fail(i, te${j}.get(i), ${rank}); }`,
    uses: [j], sets: [j], strings: [], types: j,
  };
}

// Defaults for a null, or an error record where the input may not be null. A string's default is taken by its
// vocabulary lookup.
function settlingUnit(input, j, k, rank) {
  const nullMsg = `input ${q(input.name)} is null and not nullable`;
  if (input.type === 'string') {
    if (input.nullable) return null;
    return {
      code: `if (valid${j}[i] !== ${PRESENT} && (valid${j}[i] !== ${MISTYPED} || te${j} === null)) fail(i, ${k.add(nullMsg)}, ${rank});`,
      uses: [], sets: [], strings: [j],
    };
  }
  if (input.hasDefault) return { code: `if (v${j} !== v${j}) v${j} = ${lit(input.default)};`, uses: [j], sets: [j], strings: [] };
  if (!input.nullable) return { code: `if (v${j} !== v${j}) fail(i, ${k.add(nullMsg)}, ${rank});`, uses: [j], sets: [], strings: [] };
  return null;
}

// The statements of the numeric steps on `x`.
function stepsCode(steps, inputName, k, rank) {
  const lines = [];
  for (const s of steps) {
    switch (s.op) {
      case 'impute':
        lines.push(`if (x !== x) x = ${lit(s.value)};`);
        break;
      case 'clip':
        if (s.min > -Infinity) lines.push(`if (x < ${lit(s.min)}) x = ${lit(s.min)};`);
        if (s.max < Infinity) lines.push(`if (x > ${lit(s.max)}) x = ${lit(s.max)};`);
        break;
      case 'log1p':
        lines.push(`if (x <= -1) { fail(i, ${k.add(`input ${q(inputName)} is `)} + x + ': log1p needs x > -1', ${rank}); x = NaN; } ` +
          'else x = Math.log1p(x);');
        break;
      case 'standardize':
        // Division, not a multiplication by 1/std: the same rounding as (x - mean) / std in numpy.
        lines.push(`x = (x - ${lit(s.mean)}) / ${lit(s.std)};`);
        break;
      case 'minmax':
        lines.push(`x = (x - ${lit(s.min)}) / ${lit(s.max - s.min)};`);
        break;
      case 'bucketize': {
        const b = s.boundaries;
        if (b.length <= 16) {
          lines.push(`if (x === x) x = ${b.map((v) => `(x >= ${lit(v)} ? 1 : 0)`).join(' + ')};`);
        } else {
          const bs = k.add(Float64Array.from(b));
          lines.push(`if (x === x) { let lo = 0, hi = ${b.length};` +
            ` while (lo < hi) { const mid = (lo + hi) >> 1; if (${bs}[mid] <= x) lo = mid + 1; else hi = mid; } x = lo; }`);
        }
        break;
      }
      case 'datepart': {
        const table = CIVIL_TABLE_PARTS.includes(s.part) ? k.add(civilDays()) : null;
        lines.push(`if (x === x) { if (x > -${DATE_INT} && x < ${DATE_INT}) {\n${datepartCode(s.part, table)}\n} ` +
          `else x = ${k.add(DATEPARTS[s.part])}(x); }`);
        break;
      }
      case 'onehot':
        break;
      default:
        throw new Error('unexpected step ' + s.op);
    }
  }
  return lines;
}

// The store of a block's value `x` into its column(s) of the feature row at `o`. A one-hot block clears the 1 it
// set in this row of `out` the call before (`hot<b>[i]`, its column) instead of zeroing every column: 3 stores and a
// load a row instead of one per column (18 in bench/preprocess.py's spec, 400 for a 400-word vocabulary). A null
// leaves the row as it was: the row is an error record, whose features nobody reads.
function storeCode(block, steps, inputName, k, rank) {
  const nullMsg = k.add(`input ${q(inputName)} is null and has no default or impute`);
  const last = steps[steps.length - 1];
  if (last && last.op === 'onehot') {
    const hot = `hot${block.index}`;
    return `if (x !== x) fail(i, ${nullMsg}, ${rank});\n` +
      `else { out[o + ${block.offset} + ${hot}[i]] = 0; out[o + ${block.offset} + x] = 1; ${hot}[i] = x; }`;
  }
  // |x| at or above this rounds to an infinite float32: an error record, as in model/spec.py.
  const over = k.add(`input ${q(inputName)} makes feature ${q(block.name)} overflow float32`);
  return `if (x !== x) fail(i, ${nullMsg}, ${rank}); else if (x >= ${F32_OVERFLOW} || x <= -${F32_OVERFLOW}) fail(i, ${over}, ${rank});\n` +
    `out[o + ${block.offset}] = x;`;
}

// A feature block: its input's value (or vocabulary index) through the steps into the feature row.
function blockUnit(block, input, j, k, rank) {
  let steps = block.steps;
  const lines = ['{', 'let x;'];
  if (input.type === 'string') {
    // The index of a null: of the default, else of the first impute before the vocabulary, else NaN.
    let nullValue = input.hasDefault ? input.default : null;
    let v = 0;
    for (; steps[v].op === 'impute'; v++) if (nullValue === null) nullValue = steps[v].value;
    const { values, oov } = steps[v];
    steps = steps.slice(v + 1);
    const bucket = oov === 'bucket';
    const index = new Map(values.map((s, id) => [s, id]));
    const nullId = nullValue === null ? NaN : index.has(nullValue) ? index.get(nullValue) : bucket ? values.length : -1;
    const encoded = values.map((s) => utf8Encode(s));
    const inline = encoded.reduce((t, b) => t + b.length, 0) <= INLINE_VOCAB_BYTES;
    lines.push(`if (valid${j}[i] === ${PRESENT}) {`, `const s = off${j}[i], e = off${j}[i + 1];`, 'let id;');
    lines.push(inline ? vocabCode(encoded, `bytes${j}`, `vocab${block.index}`)
      : `id = ${k.add(new ByteVocab(encoded))}.find(bytes${j}, s, e);`);
    lines.push(bucket ? `x = id >= 0 ? id : ${values.length};`
      : `if (id >= 0) x = id; else { x = NaN; fail(i, ${k.add(`input ${q(input.name)} value '`)} + ` +
        `decodeRange(bytes${j}, s, e) + ${k.add("' is not in the vocabulary")}, ${rank}); }`);
    lines.push('} else {');
    lines.push(nullId >= 0 || nullId !== nullId ? `x = ${nullId};`
      : `x = NaN; fail(i, ${k.add(`input ${q(input.name)} value ${q(nullValue)} is not in the vocabulary`)}, ${rank});`);
    lines.push('}');
  } else {
    lines.push(`x = v${j};`);
  }
  lines.push(...stepsCode(steps, input.name, k, rank), storeCode(block, steps, input.name, k, rank), '}');
  const last = steps[steps.length - 1];
  return {
    code: lines.join('\n'),
    uses: input.type === 'string' ? [] : [j],
    sets: [],
    strings: input.type === 'string' ? [j] : [],
    hot: last && last.op === 'onehot' ? [block.index] : [],
  };
}

// Past this much code (a dozen inputs' worth) the next input's units go into another row loop. TurboFan's time
// grows faster than a function's size, and in mini-racer it compiles on the calling thread: a 200-input spec took
// 1.7-3.4 s for each 40-60 KB loop (stages' order), ~100 ms in all in loops of 6 KB, which run it as fast (0.92
// us a row, against 1.0 in one loop and 1.05 in loops of 1 KB; bench/preprocess.py's spec fits in one).
const MAX_LOOP_CODE = 6000;

// Groups of units -> run(cols, start, end, out, fail, hot): the units over rows start..end-1 (row i's features at
// out[(i - start) * W ...]), a row loop for each run of groups up to MAX_LOOP_CODE. `cols[j]`: the column of
// spec.inputs[j]: {num, valid, work, typeErrors} or {bytes, offsets, valid, typeErrors}; `hot[b]`: Int32Array,
// per row, the column one-hot block b set in `out` (0 for a fresh `out`). A group holds every unit of the values
// it uses, so none crosses loops; with `load` they come from work (the typing ran before), with `store` the
// values the units set go back to work.
function compileLoops(groups, k, W, { load, store }) {
  const loops = [[]];
  let size = 0;
  for (const group of groups) {
    const length = group.reduce((t, u) => t + u.code.length, 0);
    if (size > 0 && size + length > MAX_LOOP_CODE) {
      loops.push([]);
      size = 0;
    }
    loops[loops.length - 1].push(...group);
    size += length;
  }
  const fns = loops.map((units) => {
    const head = [];
    const enter = [];
    const leave = [];
    for (const j of new Set(units.flatMap((u) => u.uses))) {
      head.push(`const num${j} = c[${j}].num, valid${j} = c[${j}].valid, work${j} = c[${j}].work, te${j} = c[${j}].typeErrors;`);
      enter.push(load && !units.some((u) => u.types === j) ? `let v${j} = work${j}[i];` : `let v${j} = NaN;`);
      if (store && units.some((u) => u.sets.includes(j))) leave.push(`work${j}[i] = v${j};`);
    }
    for (const j of new Set(units.flatMap((u) => u.strings))) {
      head.push(`const bytes${j} = c[${j}].bytes, off${j} = c[${j}].offsets, valid${j} = c[${j}].valid, te${j} = c[${j}].typeErrors;`);
    }
    for (const b of new Set(units.flatMap((u) => u.hot || []))) head.push(`const hot${b} = hot[${b}];`);
    const src = `${head.join('\n')}\nfor (let i = start, o = 0; i < end; i++, o += ${W}) {\n${enter.join('\n')}\n` +
      `${units.map((u) => u.code).join('\n')}\n${leave.join('\n')}\n}`;
    return k.compile(`return function run(c, start, end, out, fail, hot) {\n${src}\n};`);
  });
  if (fns.length === 1) return fns[0];
  return (c, start, end, out, fail, hot) => {
    for (const f of fns) f(c, start, end, out, fail, hot);
  };
}

// normalized spec -> {fused, typing, rest, materialize, prepareRank}, each run(cols, start, end, out, fail, hot)
// over the columns of spec.inputs (in that order):
// - fused: typing of the raw inputs, settling and blocks (no prepare hook, so no derived input);
// - typing[j]: the typing of input j, into work for a number (prepare's view); retyping[j]: the same for a
//   column prepare returned, whose errors rank as prepare's;
// - rest: settling and blocks from work (after prepare), the settled values back in work;
// - materialize[j]: typing and settling of numeric input j into work (the finish hook's view after `fused`).
// A loop runs an input's units one after the other (its typing, settling and blocks: its value is live for a
// short stretch), not the stages' order; each fail(row, message, rank) passes the rank of its unit in the stages'
// order (typing of input j: j; the prepare hook: prepareRank; settling of input j: prepareRank + 1 + j; block b:
// after all of them), and the batch keeps a row's error of the lowest rank: the first error of the stages' order.
export function compileFeatures(spec) {
  const k = new Constants();
  const W = spec.width;
  const I = spec.inputs.length;
  const prepareRank = I;
  const typing = spec.inputs.map((x, j) => typingUnit(x, j, k, j));
  const settling = spec.inputs.map((x, j) => settlingUnit(x, j, k, prepareRank + 1 + j));
  const blocks = spec.inputs.map(() => []);
  spec.blocks.forEach((b, i) => {
    const j = spec.inputs.findIndex((x) => x.name === b.input);
    blocks[j].push(blockUnit(b, spec.inputs[j], j, k, prepareRank + 1 + I + i));
  });
  const group = (...units) => units.flat().filter((u) => u !== null);
  const loops = (groups, opts) => compileLoops(groups, k, W, opts);
  // Compiled when first asked for: most bundles have no hooks, and need the fused loop only.
  const lazy = (make) => {
    let fn = null;
    return (c, start, end, out, fail, hot) => (fn || (fn = make()))(c, start, end, out, fail, hot);
  };
  const inputs = spec.inputs.map((_, j) => j);
  return {
    prepareRank,
    fused: loops(inputs.map((j) => group(spec.inputs[j].derived ? [] : typing[j], settling[j], blocks[j])),
      { load: false, store: false }),
    typing: typing.map((u) => lazy(() => loops([group(u)], { load: false, store: true }))),
    retyping: spec.inputs.map((x, j) => lazy(() => loops([group(typingUnit(x, j, k, prepareRank))], { load: false, store: true }))),
    rest: lazy(() => loops(inputs.map((j) => group(settling[j], blocks[j])), { load: true, store: true })),
    materialize: spec.inputs.map((x, j) => (x.type === 'string' || x.derived ? null
      : lazy(() => loops([group(typing[j], settling[j])], { load: false, store: true })))),
  };
}

// ---- JSON records -> columns ----------------------------------------------------------------------------------

// The value of `input` in a JSON record as the float64 the columns carry, NaN for null, or a message.
export function jsonValue(input, v) {
  if (v === null || v === undefined) return NaN;
  const prefix = `input ${q(input.name)} is `;
  switch (input.type) {
    case 'bool':
      if (typeof v === 'boolean') return v ? 1 : 0;
      return prefix + show(v) + ', not a boolean';
    case 'timestamp':
      if (typeof v === 'number') return v;
      if (typeof v === 'string') {
        const ms = parseTimestamp(v);
        return ms === ms ? ms : prefix + show(v) + ', not a timestamp (ISO-8601 text or ms)';
      }
      return prefix + show(v) + ', not a timestamp';
    default:
      if (typeof v === 'number') return v;
      return prefix + show(v) + ', not a number';
  }
}

// JS values of a string input (JSON records, prepare's replacements) -> the columns' layout: UTF-8 bytes,
// offsets, valid (MISTYPED for a value that is not a string: its text is kept for the hooks' view).
export function encodeStrings(input, values, n) {
  const offsets = new Int32Array(n + 1);
  const valid = new Uint8Array(n);
  const parts = new Array(n);
  let typeErrors = null;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (v === null || v === undefined) {
      parts[i] = null;
    } else {
      if (typeof v === 'string') {
        valid[i] = PRESENT;
      } else {
        valid[i] = MISTYPED;
        if (typeErrors === null) typeErrors = new Map();
        typeErrors.set(i, `input ${q(input.name)} is ${show(v)}, not a string`);
      }
      parts[i] = utf8Encode(typeof v === 'string' ? v : String(v));
      total += parts[i].length;
    }
  }
  const bytes = new Uint8Array(Math.max(1, total));
  let p = 0;
  for (let i = 0; i < n; i++) {
    offsets[i] = p;
    if (parts[i] !== null) {
      bytes.set(parts[i], p);
      p += parts[i].length;
    }
  }
  offsets[n] = p;
  return { bytes, offsets, valid, typeErrors };
}
