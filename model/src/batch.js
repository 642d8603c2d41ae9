// One batch through the pre-processing: the inputs' columns (from the host's buffers, from JSON records or from
// float32 rows), the hooks' view of them (docs/model-spec.md, "Hooks"), and the feature matrix. A Batch is
// allocated once per capacity and reused call after call; on the columns path a call allocates nothing unless
// a hook asks for strings.
//
// The stages, as model/spec.py runs them (the first error of a record wins): the raw inputs are typed, in
// `inputs` order (`type`); `prepare` adds the derived inputs, typed too; defaults replace nulls and a null left
// in a non-nullable input is an error (`settle`); then the feature blocks run (`computeFeatures`).
import { compileFeatures, decodeRange, jsonValue } from './features.js';

const q = (s) => "'" + s + "'";
const show = (v) => (typeof v === 'string' || (typeof v === 'object' && v !== null) ? JSON.stringify(v) : String(v));

// A hook returned or did something the contract does not allow: the batch's call fails (a bundle error).
export class HookError extends Error {
  constructor(message) {
    super(message);
    this.name = 'HookError';
  }
}

export class Batch {
  constructor(spec, compiled, rows) {
    this.spec = spec;
    this.compiled = compiled || compileFeatures(spec);
    this.rows = rows;
    this.n = 0;
    this.status = new Uint8Array(rows);
    this.errors = [];
    this.features = new Float32Array(rows * spec.width);
    this.idx = new Float64Array(rows);
    this.scratch = new Float64Array(rows);
    this.mask = new Uint8Array(rows);
    this.hook = '';
    this.cols = new Map();
    for (const input of spec.inputs) {
      // `nulls`: how many rows the typing found null (or of the wrong type): only those need `settle`.
      this.cols.set(input.name, input.type === 'string'
        ? { input, bytes: null, offsets: null, valid: null, strings: null, decoded: null, nulls: 0 }
        : { input, work: new Float64Array(rows), num: null, valid: null, typeErrors: null, nulls: 0 });
    }
    this.fail = (i, message) => {
      if (this.status[i] === 0) {
        this.status[i] = 2;
        this.errors.push([i, message]);
      }
    };
    const self = this;
    this.api = Object.freeze({
      get n() {
        return self.n;
      },
      get: (name) => self.get(name),
      valid: (name) => self.valid(name),
      fail: (row, message) => {
        if (!(Number.isInteger(row) && row >= 0 && row < self.n)) {
          throw new HookError(`hook ${self.hook}: batch.fail(${show(row)}, ...): row must be an integer in 0..${self.n - 1}`);
        }
        self.fail(row, `${self.hook}: ${message}`);
      },
    });
  }

  // ---- loading -------------------------------------------------------------------------------------------

  // The host's columns: views = {num: [Float64Array per numeric raw input], valid: [Uint8Array per raw input],
  // offsets: [Int32Array per string input], bytes: [Uint8Array per string input]}; status already holds the
  // host's 0/1 per row.
  loadColumns(views, n) {
    this.begin(n, false);
    let k = 0;
    let s = 0;
    this.spec.raw.forEach((input, j) => {
      const col = this.cols.get(input.name);
      if (input.type === 'string') {
        col.bytes = views.bytes[s];
        col.offsets = views.offsets[s];
        col.valid = views.valid[j];
        col.strings = null;
        s++;
      } else {
        col.num = views.num[k++];
        col.valid = views.valid[j];
      }
    });
  }

  // JSON records (objects keyed by input name, or arrays in the raw inputs' order) -> columns. A missing key
  // is a null.
  loadRecords(records) {
    const n = records.length;
    this.begin(n, true);
    const raw = this.spec.raw;
    for (let j = 0; j < raw.length; j++) {
      const input = raw[j];
      const col = this.cols.get(input.name);
      const value = (rec) => (Array.isArray(rec) ? rec[j]
        : rec === null || typeof rec !== 'object' ? undefined : rec[input.name]);
      if (input.type === 'string') {
        col.strings = records.map((rec) => {
          const v = value(rec);
          return v === undefined ? null : v;
        });
        col.bytes = col.offsets = col.valid = null;
        continue;
      }
      const num = new Float64Array(n);
      const valid = new Uint8Array(n);
      const typeErrors = [];
      for (let i = 0; i < n; i++) {
        const x = jsonValue(input, value(records[i]));
        if (typeof x === 'string') {
          typeErrors.push([i, x]);
        } else if (x === x) {
          num[i] = x;
          valid[i] = 1;
        }
      }
      col.num = num;
      col.valid = valid;
      col.typeErrors = typeErrors;
    }
  }

  // float32 rows [n x raw inputs] (contract 1; every raw input a number, NaN = null) -> columns.
  loadRows(x, n) {
    this.begin(n, true);
    const raw = this.spec.raw;
    const w = raw.length;
    for (let j = 0; j < w; j++) {
      const col = this.cols.get(raw[j].name);
      if (col.num === null || col.num.length !== this.rows) {
        col.num = new Float64Array(this.rows);
        col.valid = new Uint8Array(this.rows);
      }
      const { num, valid } = col;
      for (let i = 0, p = j; i < n; i++, p += w) {
        const v = x[p];
        num[i] = v;
        valid[i] = v === v ? 1 : 0;
      }
    }
  }

  begin(n, fresh) {
    if (n > this.rows) throw new Error(`batch of ${n} rows exceeds the ${this.rows} allocated`);
    this.n = n;
    this.errors = [];
    this.hook = '';
    if (fresh) this.status.fill(0, 0, n);
    for (const col of this.cols.values()) {
      if (col.input.type === 'string') col.decoded = null;
      else col.typeErrors = null;
      col.ready = !col.input.derived;
    }
  }

  // ---- stages ---------------------------------------------------------------------------------------------

  // The raw inputs typed: work columns with NaN for nulls (and values not of their type: error records).
  type() {
    for (const input of this.spec.raw) this.typeColumn(this.cols.get(input.name));
  }

  typeColumn(col) {
    const { n, fail } = this;
    const input = col.input;
    if (input.type !== 'string') {
      if (col.typeErrors) for (const [i, message] of col.typeErrors) fail(i, message);
      col.nulls = this.compiled.validators.get(input.name)(col.num, col.valid, n, col.work, fail);
      return;
    }
    let nulls = 0;
    if (col.strings !== null) {
      const strings = col.strings;
      for (let i = 0; i < n; i++) {
        const v = strings[i];
        if (v === null || v === undefined) nulls++;
        else if (typeof v !== 'string') fail(i, `input ${q(input.name)} is ${show(v)}, not a string`);
      }
    } else {
      const valid = col.valid;
      for (let i = 0; i < n; i++) nulls += valid[i] === 1 ? 0 : 1;
    }
    col.nulls = nulls;
  }

  // Defaults for nulls, and an error record for a null where the input may not be one, in `inputs` order. A
  // string's default is taken by its vocabulary lookup.
  settle() {
    const { n, fail } = this;
    for (const input of this.spec.inputs) {
      const col = this.cols.get(input.name);
      if (col.nulls === 0) continue;
      if (input.type !== 'string') {
        this.compiled.settlers.get(input.name)(col.work, n, fail);
        continue;
      }
      if (input.nullable) continue;
      const msg = `input ${q(input.name)} is null and not nullable`;
      if (col.strings !== null) {
        for (let i = 0; i < n; i++) if (col.strings[i] === null || col.strings[i] === undefined) fail(i, msg);
      } else {
        for (let i = 0; i < n; i++) if (col.valid[i] !== 1) fail(i, msg);
      }
    }
  }

  // The feature matrix [n x spec.width] (float32) of the typed, prepared and settled inputs.
  computeFeatures() {
    const { n, fail, features, idx } = this;
    const W = this.spec.width;
    for (const b of this.compiled.blocks) {
      const col = this.cols.get(b.input.name);
      if (b.lookup === null) {
        b.tail(col.work, n, features, W, fail);
      } else {
        if (col.strings !== null) b.lookup.fromStrings(col, n, idx, fail);
        else b.lookup.fromBytes(col, n, idx, fail);
        b.tail(idx, n, features, W, fail);
      }
    }
    return features;
  }

  // The stages from typing to the feature matrix, with the prepare hook (a function or undefined).
  featurize(prepare) {
    this.type();
    this.prepare(prepare);
    this.settle();
    return this.computeFeatures();
  }

  // ---- the hooks' view -------------------------------------------------------------------------------------

  column(name, what) {
    const col = this.cols.get(name);
    if (col === undefined) throw new HookError(`hook ${this.hook}: batch.${what}(${show(name)}): no such input`);
    if (!col.ready) throw new HookError(`hook ${this.hook}: batch.${what}(${q(name)}): derived, prepare computes it`);
    return col;
  }

  get(name) {
    const col = this.column(name, 'get');
    if (col.input.type !== 'string') return col.work.subarray(0, this.n);
    if (col.decoded === null) col.decoded = this.decode(col);
    return col.decoded;
  }

  valid(name) {
    const col = this.column(name, 'valid');
    const n = this.n;
    const out = new Uint8Array(n);
    if (col.input.type !== 'string') {
      const w = col.work;
      for (let i = 0; i < n; i++) out[i] = w[i] === w[i] ? 1 : 0;
    } else {
      const s = this.get(name);
      for (let i = 0; i < n; i++) out[i] = s[i] === null ? 0 : 1;
    }
    return out;
  }

  decode(col) {
    const n = this.n;
    const out = new Array(n);
    if (col.strings !== null) {
      for (let i = 0; i < n; i++) {
        const s = col.strings[i];
        out[i] = typeof s === 'string' ? s : s === null || s === undefined ? null : String(s);
      }
      return out;
    }
    const { bytes, offsets, valid } = col;
    for (let i = 0; i < n; i++) out[i] = valid[i] === 1 ? decodeRange(bytes, offsets[i], offsets[i + 1]) : null;
    return out;
  }

  // prepare(batch) -> {name: column} for every derived input (and raw ones it replaces).
  prepare(fn) {
    const derived = this.spec.derived;
    if (typeof fn !== 'function') return;
    this.hook = 'prepare';
    let result;
    try {
      result = fn(this.api);
    } catch (e) {
      if (e instanceof HookError) throw e;
      throw new HookError(`hook prepare threw: ${e && e.message ? e.message : String(e)}`);
    }
    if (result === undefined && derived.length === 0) return;
    if (typeof result !== 'object' || result === null) {
      throw new HookError(`hook prepare returned ${show(result)}, expected {name: column}` +
        (derived.length ? ` with the derived inputs (${derived.map((d) => d.name).join(', ')})` : ''));
    }
    for (const input of derived) {
      if (!(input.name in result)) throw new HookError(`hook prepare did not return derived input ${q(input.name)}`);
    }
    for (const name of Object.keys(result)) {
      const col = this.cols.get(name);
      if (col === undefined) throw new HookError(`hook prepare returned ${q(name)}, which is not an input`);
      this.replace(col, result[name]);
    }
  }

  replace(col, values) {
    const n = this.n;
    const name = col.input.name;
    const isTyped = ArrayBuffer.isView(values) && !(values instanceof DataView);
    if (!(Array.isArray(values) || isTyped)) {
      throw new HookError(`hook prepare returned ${q(name)} as ${show(values)}, expected an array of ${n} values`);
    }
    if (values.length !== n) {
      throw new HookError(`hook prepare returned ${q(name)} with ${values.length} values for ${n} rows`);
    }
    col.ready = true;
    if (col.input.type === 'string') {
      if (isTyped) throw new HookError(`hook prepare returned ${q(name)} as a typed array; a string input needs an Array`);
      col.strings = values;
      col.decoded = null;
      col.bytes = col.offsets = col.valid = null;
      this.typeColumn(col);
      return;
    }
    const num = this.scratch;
    const valid = this.mask;
    for (let i = 0; i < n; i++) {
      let v = values[i];
      if (typeof v === 'boolean' && col.input.type === 'bool') v = v ? 1 : 0;
      if (typeof v === 'number') {
        num[i] = v;
        valid[i] = v === v ? 1 : 0;
      } else {
        num[i] = NaN;
        valid[i] = 0;
        if (v !== null && v !== undefined) this.fail(i, `input ${q(name)} is ${show(v)}, not a number`);
      }
    }
    col.typeErrors = null;
    col.nulls = this.compiled.validators.get(name)(num, valid, n, col.work, this.fail);
  }

  // finish(batch, result) -> {extra: column} for every declared extra; returns them (or null).
  finish(fn, scores, width, outputs) {
    const extras = this.spec.extras;
    if (typeof fn !== 'function') return null;
    this.hook = 'finish';
    const result = { scores: scores.subarray(0, this.n * width), width, outputs };
    let got;
    try {
      got = fn(this.api, result);
    } catch (e) {
      if (e instanceof HookError) throw e;
      throw new HookError(`hook finish threw: ${e && e.message ? e.message : String(e)}`);
    }
    if (extras.length === 0) return null;
    if (typeof got !== 'object' || got === null) {
      throw new HookError(`hook finish returned ${show(got)}, expected {name: column} with the extras ` +
        `(${extras.map((e) => e.name).join(', ')})`);
    }
    for (const e of extras) {
      const col = got[e.name];
      if (col === undefined) throw new HookError(`hook finish did not return extra ${q(e.name)}`);
      if (!(Array.isArray(col) || ArrayBuffer.isView(col)) || col.length !== this.n) {
        throw new HookError(`hook finish returned extra ${q(e.name)} with ` +
          `${col && col.length !== undefined ? col.length : show(col)} values for ${this.n} rows`);
      }
    }
    return got;
  }

  // Errors of the last call, in row order.
  rowErrors() {
    return this.errors.slice().sort((a, b) => a[0] - b[0]);
  }
}
