// The build's checks (docs/model-spec.md, "Checks at build time"): the built bundle evaluated in a fresh
// node:vm context, with no timers, no require and no host (as V8 in the job), then run on the spec's own
// records through every path the job can take. Node-only: build.mjs imports it, bundles never do.
import vm from 'node:vm';
import { parseTimestamp } from './time.js';

export class CheckError extends Error {}

const CALL_TIMEOUT_MS = 60000;
const q = (s) => "'" + s + "'";
const fmt = (v) => (typeof v === 'number' ? String(Number(v.toPrecision(7))) : String(v));

class Bundle {
  constructor(code) {
    this.ctx = vm.createContext({}, { microtaskMode: 'afterEvaluate', codeGeneration: { strings: true } });
    this.run(code, 'evaluating the bundle');
  }

  run(code, what) {
    try {
      return vm.runInContext(code, this.ctx, { timeout: CALL_TIMEOUT_MS, filename: 'ml.bundle.js' });
    } catch (e) {
      const message = e && e.message ? e.message : String(e);
      if (process.env.BUILD_DEBUG) process.stderr.write(String(e && e.stack) + '\n');
      throw new CheckError(`${what}: ${message}`);
    }
  }

  // JSON in, JSON out: no object crosses between the realms.
  call(expr, args, what) {
    this.ctx.__args = JSON.stringify(args === undefined ? null : args);
    const text = this.run(`JSON.stringify((() => { const args = JSON.parse(globalThis.__args); return ${expr}; })())`, what);
    return text === undefined ? undefined : JSON.parse(text);
  }

  async init(options) {
    this.ctx.__options = options || null;
    this.run(`globalThis.__init = null; Promise.resolve().then(() => ml.init(globalThis.__options)).then(
      () => { globalThis.__init = {ok: true}; }, (e) => { globalThis.__init = {error: e && e.message ? e.message : String(e)}; })`,
    'ml.init()');
    const r = this.ctx.__init;
    if (r === null || r === undefined) throw new CheckError('ml.init() did not settle (does it wait for a timer?)');
    if (r.error) throw new CheckError(r.error);
  }
}

// Every record has every input the job gives (a nullable one may be null, not absent).
function checkRecords(spec, records, where) {
  records.forEach((rec, i) => {
    for (const input of spec.raw) {
      if (!(input.name in rec)) throw new CheckError(`${where}[${i}] has no field ${q(input.name)} (an input of the spec)`);
    }
  });
}

// The host's side of contract 2 for the check: records -> the bundle's column buffers (as reloader/ does it).
function encodeColumns(bundle, spec, records) {
  const n = records.length;
  const bufs = bundle.run(`ml.columns(${n})`, 'ml.columns(rows)');
  const status = new Uint8Array(bufs[3]);
  let k = 0;
  let s = 0;
  spec.raw.forEach((input, j) => {
    const valid = new Uint8Array(bufs[1], j * n, n);
    if (input.type === 'string') {
      const parts = records.map((r) => (typeof r[input.name] === 'string' ? Buffer.from(r[input.name], 'utf8') : null));
      const total = parts.reduce((a, p) => a + (p ? p.length : 0), 0);
      const bytesBuf = bundle.run(`ml.reserve(${s}, ${total})`, 'ml.reserve(k, nbytes)');
      const bytes = new Uint8Array(bytesBuf);
      const offsets = new Int32Array(bufs[2], s * (n + 1) * 4, n + 1);
      let at = 0;
      parts.forEach((p, i) => {
        offsets[i] = at;
        valid[i] = p ? 1 : 0;
        if (p) {
          bytes.set(p, at);
          at += p.length;
        } else if (records[i][input.name] !== null && records[i][input.name] !== undefined) {
          status[i] = 1;
        }
      });
      offsets[n] = at;
      s++;
      return;
    }
    const num = new Float64Array(bufs[0], k * n * 8, n);
    records.forEach((r, i) => {
      let v = r[input.name];
      if (typeof v === 'boolean' && input.type === 'bool') v = v ? 1 : 0;
      if (typeof v === 'string' && input.type === 'timestamp') v = parseTimestamp(v);
      if (typeof v === 'number') {
        num[i] = v;
        valid[i] = v === v ? 1 : 0;
      } else {
        valid[i] = 0;
        if (v !== null && v !== undefined) status[i] = 1;
      }
    });
    k++;
  });
  return { status, out: new Float32Array(bufs[4]) };
}

function compareScores(got, expected, tolerance, columns, what) {
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    for (let j = 0; j < expected[i].length; j++) {
      const d = Math.abs(got[i][j] - expected[i][j]);
      if (!(d <= tolerance)) {
        throw new CheckError(`self-test: ${what} gives ${fmt(got[i][j])} for selfTest.records[${i}] output ` +
          `${q(columns[j])}, Keras gave ${fmt(expected[i][j])} (|delta| ${fmt(d)} > tolerance ${tolerance})`);
      }
      if (d > worst) worst = d;
    }
  }
  return worst;
}

function checkSkew(spec, samples, got) {
  if (samples.names !== undefined) {
    const want = spec.featureNames;
    for (let j = 0; j < Math.max(want.length, samples.names.length); j++) {
      if (want[j] !== samples.names[j]) {
        throw new CheckError(`skew: samples.names differ from the spec's features at column ${j}: ` +
          `training ${q(samples.names[j])}, the bundle ${q(want[j])}`);
      }
    }
  }
  const errors = new Map(got.errors);
  let worst = 0;
  samples.features.forEach((want, i) => {
    const row = got.rows[i];
    if (want === null) return;
    if (row === null) {
      throw new CheckError(`skew: samples.records[${i}]: the bundle refuses it (${errors.get(i)}), training computed its features`);
    }
    if (!Array.isArray(want) || want.length !== row.length) {
      throw new CheckError(`skew: samples.features[${i}] has ${Array.isArray(want) ? want.length : 0} values, ` +
        `the spec makes ${row.length} features`);
    }
    for (let j = 0; j < row.length; j++) {
      const a = row[j];
      const b = want[j];
      const d = Math.abs(a - b);
      if (!(d <= 1e-5 * Math.max(1, Math.abs(b)))) {
        throw new CheckError(`skew: feature ${q(spec.featureNames[j])} of samples.records[${i}]: the bundle ` +
          `computes ${fmt(a)}, training computed ${fmt(b)}`);
      }
      if (d > worst) worst = d;
    }
  });
  return worst;
}

// code: the bundle's text; spec: normalized; raw: the spec as written. Returns the report or throws CheckError.
export async function checkBundle(code, spec, raw) {
  let bundle = new Bundle(code);
  const meta = bundle.call('ml.meta', undefined, 'ml.meta');
  const warnings = [];
  try {
    await bundle.init();
  } catch (e) {
    // A pinned kernel that does not apply is refused when the bundle is loaded (docs/bundle-contract.md),
    // not here: check everything else with the kernel the bundle would otherwise choose.
    if (!(e instanceof CheckError && /^(unknown kernel|kernel ")/.test(e.message))) throw e;
    warnings.push(`the bundle will be refused when loaded: ${e.message}`);
    bundle = new Bundle(code);
    await bundle.init({ kernel: 'auto' });
  }
  const report = {
    kernel: bundle.call('ml.kernel', undefined, 'ml.kernel'),
    kernelReason: bundle.call('ml.kernelReason', undefined, 'ml.kernelReason'),
    features: spec.width,
    blocks: spec.blocks.map((b) => [b.name, b.width]),
    selfTest: {},
    skew: null,
    warnings,
  };
  const st = raw.selfTest;
  checkRecords(spec, st.records, 'selfTest.records');
  if (raw.samples) checkRecords(spec, raw.samples.records, 'samples.records');

  if (raw.samples) {
    const got = bundle.call('ml.features(args)', raw.samples.records, 'ml.features(samples.records)');
    report.skew = { maxDelta: checkSkew(spec, raw.samples, got), records: raw.samples.records.length };
  }

  const results = bundle.call('ml.predict(args)', st.records, 'ml.predict(selfTest.records)');
  results.forEach((r, i) => {
    if (r.error) throw new CheckError(`selfTest.records[${i}]: ${r.error}`);
  });
  const columns = meta.outputs;
  report.selfTest.json = compareScores(results.map((r) => r.scores), st.expected, st.tolerance, columns, 'the JSON path (TF.js)');

  const { status, out } = encodeColumns(bundle, spec, st.records);
  const refused = status.findIndex((v) => v === 1);
  if (refused >= 0) throw new CheckError(`selfTest.records[${refused}]: a value does not have its input's type`);
  const failed = bundle.run(`ml.predictColumns(${st.records.length})`, 'ml.predictColumns(n)');
  if (failed) {
    const [row, message] = bundle.call('ml.rowErrors()', undefined, 'ml.rowErrors()')[0];
    throw new CheckError(`selfTest.records[${row}] on the columns path: ${message}`);
  }
  const w = columns.length;
  const fast = st.records.map((_, i) => Array.from(out.subarray(i * w, (i + 1) * w)));
  report.selfTest.columns = compareScores(fast, st.expected, st.tolerance, columns, `the columns path (${report.kernel})`);

  const st1 = bundle.call('ml.selfTest.inputs || null', undefined, 'ml.selfTest');
  if (st1 && bundle.call("typeof ml.predictBuffer === 'function'", undefined, 'ml.predictBuffer')) {
    const n = st1.length;
    const bufs = bundle.run(`ml.buffers(${n})`, 'ml.buffers(rows)');
    new Float32Array(bufs[0]).set(st1.flat());
    bundle.run(`ml.predictBuffer(${n})`, 'ml.predictBuffer(n) on selfTest.inputs');
    const y = new Float32Array(bufs[1]);
    const rows = st1.map((_, i) => Array.from(y.subarray(i * w, (i + 1) * w)));
    report.selfTest.rows = compareScores(rows, st.expected, st.tolerance, columns, `the contract-1 path (${report.kernel})`);
  }
  return report;
}

export function formatReport(r) {
  const paths = Object.entries(r.selfTest).map(([k, v]) => `${k} ${fmt(v)}`).join(', ');
  return [
    ...r.warnings.map((w) => `warning: ${w}`),
    `kernel: ${r.kernel}${r.kernelReason ? ` (${r.kernelReason})` : ''}`,
    `features: ${r.features} (${r.blocks.map(([n, w]) => (w > 1 ? `${n}: ${w}` : n)).join(', ')})`,
    `self-test max |delta|: ${paths}`,
    r.skew ? `skew max |delta|: ${fmt(r.skew.maxDelta)} over ${r.skew.records} sample records` : 'skew: no samples in the spec',
  ].join('\n');
}
