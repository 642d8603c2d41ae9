// One batch through the pre-processing: the inputs' columns (from the host's buffers, from JSON records or from
// float32 rows), the hooks' view of them (docs/model-spec.md, "Hooks"), and the feature matrix. A Batch is
// allocated once per capacity and reused call after call; on the columns path a call allocates nothing unless
// a hook asks for values.
//
// The stages, as model/spec.py runs them (the first error of a record wins): the raw inputs are typed, in
// `inputs` order; `prepare` adds the derived inputs, typed too; defaults replace nulls and a null left in a
// non-nullable input is an error; then the feature blocks run. features.js compiles them into row loops: without
// a prepare hook, loops that take a few inputs each through all of it; with one, the typing, the hook, and the
// rest.
import { MISTYPED, PRESENT, compileFeatures, encodeStrings, jsonValue, show } from './features.js';
import { decodeRange } from './vocab.js';

const q = (s) => "'" + s + "'";

// What a numeric column's `work` holds: nothing yet (the fused loop keeps values in locals), the typed values
// (NaN = null; what prepare sees), or the settled ones (defaults in; what finish sees).
const RAW = 0;
const TYPED = 1;
const SETTLED = 2;

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
    // Per one-hot block, the column of its 1 in each row of `features` (features.js, storeCode).
    this.hot = spec.blocks.map((b) => (b.steps.length && b.steps[b.steps.length - 1].op === 'onehot'
      ? new Int32Array(rows) : null));
    this.hook = '';
    // The columns of spec.inputs, in its order (the generated loops index them so): a number's `num` (float64)
    // and `valid`, its `work` (float64, NaN = null), or a string's UTF-8 `bytes`, `offsets` and `valid`; each
    // with `typeErrors` (row -> message, for the rows `valid` marks MISTYPED) or null.
    this.list = spec.inputs.map((input) => (input.type === 'string'
      ? { input, bytes: null, offsets: null, valid: null, typeErrors: null, decoded: null, ready: false }
      : { input, num: null, valid: null, work: new Float64Array(rows), typeErrors: null, state: RAW, ready: false }));
    this.cols = new Map(this.list.map((col) => [col.input.name, col]));
    this.rowColumns = null; // loadRows' own columns
    // A row's error of the lowest rank wins (features.js, compileFeatures: the generated loops do not run the
    // stages in their order); a row the host refused (status 1) keeps none.
    this.errorRank = new Float64Array(rows);
    this.errorAt = new Int32Array(rows);
    this.hookRank = Infinity;
    this.fail = (i, message, rank) => {
      const status = this.status[i];
      if (status === 0) {
        this.status[i] = 2;
        this.errorRank[i] = rank;
        this.errorAt[i] = this.errors.length;
        this.errors.push([i, message]);
      } else if (status === 2 && rank < this.errorRank[i]) {
        const error = this.errors[this.errorAt[i]];
        if (error !== undefined && error[0] === i) {
          this.errorRank[i] = rank;
          error[1] = message;
        }
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
        self.fail(row, `${self.hook}: ${message}`, self.hookRank);
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
        s++;
      } else {
        col.num = views.num[k++];
      }
      col.valid = views.valid[j];
    });
  }

  // JSON records (objects keyed by input name, or arrays in the raw inputs' order) -> columns. A missing key
  // is a null; a value of the wrong JavaScript type is MISTYPED, with its message.
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
        Object.assign(col, encodeStrings(input, records.map(value), n));
        continue;
      }
      const num = new Float64Array(n);
      const valid = new Uint8Array(n);
      let typeErrors = null;
      for (let i = 0; i < n; i++) {
        const x = jsonValue(input, value(records[i]));
        if (typeof x === 'string') {
          valid[i] = MISTYPED;
          if (typeErrors === null) typeErrors = new Map();
          typeErrors.set(i, x);
        } else if (x === x) {
          num[i] = x;
          valid[i] = PRESENT;
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
    if (this.rowColumns === null) {
      this.rowColumns = raw.map(() => ({ num: new Float64Array(this.rows), valid: new Uint8Array(this.rows) }));
    }
    for (let j = 0; j < w; j++) {
      const col = this.cols.get(raw[j].name);
      const { num, valid } = this.rowColumns[j];
      for (let i = 0, p = j; i < n; i++, p += w) {
        const v = x[p];
        num[i] = v;
        valid[i] = v === v ? PRESENT : 0;
      }
      col.num = num;
      col.valid = valid;
    }
  }

  begin(n, fresh) {
    if (n > this.rows) throw new Error(`batch of ${n} rows exceeds the ${this.rows} allocated`);
    this.n = n;
    this.errors = [];
    this.hook = '';
    if (fresh) this.status.fill(0, 0, n);
    for (const col of this.list) {
      col.typeErrors = null;
      col.ready = !col.input.derived;
      if (col.input.type === 'string') col.decoded = null;
      else col.state = RAW;
    }
  }

  // ---- stages ---------------------------------------------------------------------------------------------

  // The feature matrix [n x spec.width] (float32) of the loaded columns, with the prepare hook (a function or
  // undefined) between the typing and the rest.
  featurize(prepare) {
    const { n, fail, features, list, compiled, hot } = this;
    if (typeof prepare !== 'function') {
      compiled.fused(list, 0, n, features, fail, hot);
      return features;
    }
    this.spec.inputs.forEach((input, j) => {
      if (input.derived) return;
      const col = list[j];
      if (input.type !== 'string') {
        compiled.typing[j](list, 0, n, features, fail);
        col.state = TYPED;
      } else if (col.typeErrors !== null) {
        compiled.typing[j](list, 0, n, features, fail);
      }
    });
    this.prepare(prepare);
    compiled.rest(list, 0, n, features, fail, hot);
    for (const col of list) if (col.input.type !== 'string') col.state = SETTLED;
    return features;
  }

  // ---- the hooks' view -------------------------------------------------------------------------------------

  column(name, what) {
    const col = this.cols.get(name);
    if (col === undefined) throw new HookError(`hook ${this.hook}: batch.${what}(${show(name)}): no such input`);
    if (!col.ready) throw new HookError(`hook ${this.hook}: batch.${what}(${q(name)}): derived, prepare computes it`);
    return col;
  }

  // A numeric column's work as the hook sees it: typed for prepare (the typing filled it), settled for finish
  // (after the fused loop, which kept the values in locals, typed and settled again here: the errors they
  // find were found then, so fail changes nothing).
  work(col) {
    if (col.state === RAW) {
      this.compiled.materialize[this.list.indexOf(col)](this.list, 0, this.n, this.features, this.fail);
      col.state = SETTLED;
    }
    return col.work;
  }

  get(name) {
    const col = this.column(name, 'get');
    if (col.input.type !== 'string') return this.work(col).subarray(0, this.n);
    if (col.decoded === null) col.decoded = this.decode(col);
    return col.decoded;
  }

  valid(name) {
    const col = this.column(name, 'valid');
    const n = this.n;
    const out = new Uint8Array(n);
    if (col.input.type !== 'string') {
      const w = this.work(col);
      for (let i = 0; i < n; i++) out[i] = w[i] === w[i] ? 1 : 0;
    } else {
      const s = this.get(name);
      for (let i = 0; i < n; i++) out[i] = s[i] === null ? 0 : 1;
    }
    return out;
  }

  // A string column as JS strings, null where null (a MISTYPED value as its text).
  decode(col) {
    const n = this.n;
    const out = new Array(n);
    const { bytes, offsets, valid, typeErrors } = col;
    for (let i = 0; i < n; i++) {
      const v = valid[i];
      out[i] = v === PRESENT || (v === MISTYPED && typeErrors !== null) ? decodeRange(bytes, offsets[i], offsets[i + 1]) : null;
    }
    return out;
  }

  // prepare(batch) -> {name: column} for every derived input (and raw ones it replaces).
  prepare(fn) {
    const derived = this.spec.derived;
    if (typeof fn !== 'function') return;
    this.hook = 'prepare';
    this.hookRank = this.compiled.prepareRank;
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
    const j = this.list.indexOf(col);
    if (col.input.type === 'string') {
      if (isTyped) throw new HookError(`hook prepare returned ${q(name)} as a typed array; a string input needs an Array`);
      Object.assign(col, encodeStrings(col.input, values, n));
      col.decoded = null;
      if (col.typeErrors !== null) this.compiled.retyping[j](this.list, 0, n, this.features, this.fail);
      return;
    }
    // The column's own arrays: a host's view (or a batch's other column) is not written.
    const num = new Float64Array(n);
    const valid = new Uint8Array(n);
    let typeErrors = null;
    for (let i = 0; i < n; i++) {
      let v = values[i];
      if (typeof v === 'boolean' && col.input.type === 'bool') v = v ? 1 : 0;
      if (typeof v === 'number') {
        num[i] = v;
        valid[i] = v === v ? PRESENT : 0;
      } else if (v !== null && v !== undefined) {
        valid[i] = MISTYPED;
        if (typeErrors === null) typeErrors = new Map();
        typeErrors.set(i, `input ${q(name)} is ${show(v)}, not a number`);
      }
    }
    col.num = num;
    col.valid = valid;
    col.typeErrors = typeErrors;
    this.compiled.retyping[j](this.list, 0, n, this.features, this.fail);
    col.state = TYPED;
  }

  // finish(batch, result) -> {extra: column} for every declared extra; returns them (or null).
  finish(fn, scores, width, outputs) {
    const extras = this.spec.extras;
    if (typeof fn !== 'function') return null;
    this.hook = 'finish';
    this.hookRank = Infinity;
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
