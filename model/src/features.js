// The declarative pre-processing (docs/model-spec.md, "Features"), compiled once from the normalized spec into
// closures: a validator (types) and a settler (defaults, nulls) per numeric input, a lookup stage per string
// block (vocabulary on UTF-8 bytes or on JS strings), and one generated function per block for its numeric
// steps. The hot loops run straight-line code over typed arrays; no step list is interpreted per row.
//
// Numerics, as the Python side (model/spec.py) computes them: each block in float64 in step order, rounded to
// float32 once, when its value is stored into the Float32Array feature matrix. NaN stands for null.
import { utf8Decode, utf8Encode } from './platform.js';
import { DATEPARTS, parseTimestamp } from './time.js';

const q = (s) => "'" + s + "'";
const show = (v) => (typeof v === 'string' || (typeof v === 'object' && v !== null) ? JSON.stringify(v) : String(v));

function lit(v) {
  // The shortest text that reads back as the same double: exact.
  if (v === Infinity) return 'Infinity';
  if (v === -Infinity) return '-Infinity';
  return Object.is(v, -0) ? '-0' : String(v);
}

// |x| from here on rounds to an infinite float32 (2^128 - 2^103).
const F32_OVERFLOW = 3.4028235677973366e38;

// ---- strings ------------------------------------------------------------------------------------------------

// bytes[s..e) as a JS string: ASCII without a per-character loop over code points.
export function decodeRange(bytes, s, e) {
  let ascii = true;
  for (let k = s; k < e; k++) {
    if (bytes[k] >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (!ascii) return utf8Decode(bytes.subarray(s, e));
  if (e - s < 4096) return String.fromCharCode.apply(null, bytes.subarray(s, e));
  let out = '';
  for (let k = s; k < e; k += 4096) out += String.fromCharCode.apply(null, bytes.subarray(k, Math.min(e, k + 4096)));
  return out;
}

// A vocabulary as an open-addressing hash table over the values' UTF-8 bytes: a lookup hashes and compares
// the row's bytes in place, with no string made. 14 ns a row, against 84 for String.fromCharCode.apply + a Map
// and 68 for a string built byte by byte + a Map (10-byte words, 12 values, Node 20).
class ByteVocab {
  constructor(values) {
    const encoded = values.map((v) => utf8Encode(v));
    this.lens = Int32Array.from(encoded, (b) => b.length);
    this.starts = new Int32Array(values.length);
    let total = 0;
    encoded.forEach((b, i) => {
      this.starts[i] = total;
      total += b.length;
    });
    this.pool = new Uint8Array(total);
    encoded.forEach((b, i) => this.pool.set(b, this.starts[i]));
    let size = 16;
    while (size < values.length * 4) size *= 2;
    this.mask = size - 1;
    this.table = new Int32Array(size).fill(-1);
    encoded.forEach((b, i) => {
      let slot = ByteVocab.hash(b, 0, b.length) & this.mask;
      while (this.table[slot] >= 0) slot = (slot + 1) & this.mask;
      this.table[slot] = i;
    });
  }

  static hash(bytes, s, e) {
    let h = 0x811c9dc5; // FNV-1a
    for (let k = s; k < e; k++) h = Math.imul(h ^ bytes[k], 16777619);
    return h ^ (h >>> 15);
  }

  // Index of bytes[s..e), or -1.
  find(bytes, s, e) {
    const { table, mask, lens, starts, pool } = this;
    const len = e - s;
    let slot = ByteVocab.hash(bytes, s, e) & mask;
    for (;;) {
      const id = table[slot];
      if (id < 0) return -1;
      if (lens[id] === len) {
        const p = starts[id];
        let k = 0;
        while (k < len && pool[p + k] === bytes[s + k]) k++;
        if (k === len) return id;
      }
      slot = (slot + 1) & mask;
    }
  }
}

// ---- validators: one per input, over (values float64, valid uint8) -> work float64 (NaN = null) ------------

function checkFor(type) {
  // Returns a message for a present value that is not of the type, or null.
  switch (type) {
    case 'int':
      return (v) => (v - v !== 0 ? ', not a finite number' : v !== Math.floor(v) ? ', not an integer' : null);
    case 'bool':
      return (v) => (v !== 0 && v !== 1 ? ', not a boolean' : null);
    case 'timestamp':
      return (v) => (v - v !== 0 ? ', not a finite timestamp' : null);
    default:
      return (v) => (v - v !== 0 ? ', not a finite number' : null);
  }
}

// (num, valid, n, work, fail) -> the number of nulls, for a numeric input: work[i] = the value, or NaN for a
// null or a value not of the input's type (an error record). Defaults come later (settleNulls): the hooks'
// prepare sees nulls as nulls, as in model/spec.py.
function numericValidator(input) {
  const { name, type } = input;
  const bad = checkFor(type);
  const prefix = `input ${q(name)} is `;
  return function validate(num, valid, n, work, fail) {
    let nulls = 0;
    for (let i = 0; i < n; i++) {
      let v = valid[i] === 1 ? num[i] : NaN;
      if (v !== v) {
        nulls++;
      } else if (type === 'float' ? v - v !== 0 : true) {
        const why = bad(v);
        if (why !== null) {
          fail(i, prefix + show(v) + why);
          v = NaN;
          nulls++;
        }
      }
      work[i] = v;
    }
    return nulls;
  };
}

// (work, n, fail) for a numeric input with nulls: the default in their place, or an error record where the
// input may not be null.
function numericSettler(input) {
  const { hasDefault, nullable } = input;
  const dflt = input.default;
  const nullMsg = `input ${q(input.name)} is null and not nullable`;
  return function settle(work, n, fail) {
    for (let i = 0; i < n; i++) {
      if (work[i] !== work[i]) {
        if (hasDefault) work[i] = dflt;
        else if (!nullable) fail(i, nullMsg);
      }
    }
  };
}

// ---- blocks -------------------------------------------------------------------------------------------------

// The steps after a block's lookup stage (or all of them for a number or a timestamp), as one generated
// function over the block's source column: (src, n, out, W, fail) writes the block's column(s) of rows 0..n-1.
function compileTail(block, steps, inputName) {
  const h = { DATEPARTS };
  const head = []; // constants of the generated function, read once
  const lines = [];
  const msg = (text) => {
    const k = 'm' + Object.keys(h).length;
    h[k] = text;
    return k;
  };
  const log1pMsg = msg(`input ${q(inputName)} is `);
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
        lines.push(`if (x <= -1) { fail(i, h.${log1pMsg} + x + ': log1p needs x > -1'); x = NaN; } else x = Math.log1p(x);`);
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
          const k = 'b' + Object.keys(h).length;
          h[k] = Float64Array.from(b);
          head.push(`const ${k} = h.${k};`);
          lines.push(`if (x === x) { let lo = 0, hi = ${b.length};` +
            ` while (lo < hi) { const mid = (lo + hi) >> 1; if (${k}[mid] <= x) lo = mid + 1; else hi = mid; } x = lo; }`);
        }
        break;
      }
      case 'datepart':
        lines.push(`if (x === x) x = ${s.part}(x);`);
        break;
      case 'onehot':
        break;
      default:
        throw new Error('unexpected step ' + s.op);
    }
  }
  const nullMsg = msg(`input ${q(inputName)} is null and has no default or impute`);
  const onehot = steps.length && steps[steps.length - 1].op === 'onehot' ? steps[steps.length - 1].size : 0;
  let store;
  if (onehot) {
    const zero = [];
    const nan = [];
    for (let j = 0; j < onehot; j++) {
      zero.push(`out[o + ${j}] = 0;`);
      nan.push(`out[o + ${j}] = NaN;`);
    }
    store = `if (x !== x) { fail(i, h.${nullMsg}); ${nan.join(' ')} } else { ${zero.join(' ')} out[o + x] = 1; }`;
  } else {
    // |x| at or above this rounds to an infinite float32: an error record, as in model/spec.py.
    const over = msg(`input ${q(inputName)} makes feature ${q(block.name)} overflow float32`);
    store = `if (x !== x) fail(i, h.${nullMsg}); else if (x >= ${F32_OVERFLOW} || x <= -${F32_OVERFLOW}) ` +
      `fail(i, h.${over}); out[o] = x;`;
  }
  for (const p of new Set(steps.filter((s) => s.op === 'datepart').map((s) => s.part))) {
    head.push(`const ${p} = h.DATEPARTS.${p};`);
  }
  const src = head.join('\n') + '\n' +
    `return function block(src, n, out, W, fail) {\n` +
    `for (let i = 0, o = ${block.offset}; i < n; i++, o += W) {\n` +
    `let x = src[i];\n${lines.join('\n')}\n${store}\n}\n};`;
  // eslint-disable-next-line no-new-func
  return new Function('h', src)(h);
}

// The lookup stage of a string block: (column, n, idx, fail) writes each row's vocabulary index (NaN = null).
// A column is {bytes, offsets, valid} (from the host) or {strings: Array} (JSON path, hooks).
function compileLookup(input, steps) {
  let nullValue = input.hasDefault ? input.default : null;
  let k = 0;
  for (; steps[k].op === 'impute'; k++) if (nullValue === null) nullValue = steps[k].value;
  const { values, oov } = steps[k];
  const bytesVocab = new ByteVocab(values);
  const map = new Map(values.map((v, i) => [v, i]));
  const bucket = oov === 'bucket';
  const oovIndex = values.length;
  const lookup = (s) => {
    const id = map.get(s);
    return id !== undefined ? id : bucket ? oovIndex : -1;
  };
  const oovMsg = (s) => `input ${q(input.name)} value ${q(s)} is not in the vocabulary`;
  const nullIndex = nullValue === null ? NaN : lookup(nullValue);
  const notString = `input ${q(input.name)} is `;
  function fromBytes(col, n, idx, fail) {
    const { bytes, offsets, valid } = col;
    for (let i = 0; i < n; i++) {
      if (valid[i] !== 1) {
        idx[i] = nullIndex;
        if (nullIndex < 0) fail(i, oovMsg(nullValue));
        continue;
      }
      const s = offsets[i];
      const e = offsets[i + 1];
      const id = bytesVocab.find(bytes, s, e);
      if (id >= 0) {
        idx[i] = id;
      } else if (bucket) {
        idx[i] = oovIndex;
      } else {
        idx[i] = NaN;
        fail(i, oovMsg(decodeRange(bytes, s, e)));
      }
    }
  }
  function fromStrings(col, n, idx, fail) {
    const strings = col.strings;
    for (let i = 0; i < n; i++) {
      const s = strings[i];
      let id;
      if (typeof s === 'string') id = lookup(s);
      else if (s === null || s === undefined) id = nullIndex;
      else {
        fail(i, notString + show(s) + ', not a string');
        idx[i] = NaN;
        continue;
      }
      if (id < 0) {
        fail(i, oovMsg(typeof s === 'string' ? s : nullValue));
        idx[i] = NaN;
      } else {
        idx[i] = id;
      }
    }
  }
  return { fromBytes, fromStrings, rest: steps.slice(k + 1) };
}

// normalized spec -> {validators, settlers, blocks}: blocks[i] = {input, lookup?, tail}.
export function compileFeatures(spec) {
  const byName = new Map(spec.inputs.map((x) => [x.name, x]));
  const validators = new Map();
  const settlers = new Map();
  for (const input of spec.inputs) {
    if (input.type === 'string') continue;
    validators.set(input.name, numericValidator(input));
    settlers.set(input.name, numericSettler(input));
  }
  const blocks = spec.blocks.map((block) => {
    const input = byName.get(block.input);
    let steps = block.steps;
    let lookup = null;
    if (input.type === 'string') {
      lookup = compileLookup(input, steps);
      steps = lookup.rest;
    }
    return { block, input, lookup, tail: compileTail(block, steps, input.name) };
  });
  return { validators, settlers, blocks };
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
