// A hand-written contract-2 bundle (docs/model-spec.md, "Contract 2"), with no TF.js and no builder,
// so the host's typed path is tested on its own: five raw inputs of every type, one derived by the
// bundle, a regression output and two extras.
//   score = x + n + 10 * flag + len(word) + month(when); error row when word is "bad" or x is null.
globalThis.ml = (() => {
  const inputs = [
    { name: 'x', type: 'float', nullable: true },
    { name: 'n', type: 'int', nullable: false },
    { name: 'flag', type: 'bool', nullable: false },
    { name: 'word', type: 'string', nullable: true },
    { name: 'when', type: 'timestamp', nullable: true },
  ];
  const numeric = inputs.filter((f) => f.type !== 'string');
  let R = 0;
  let num, valid, offsets, status, out, extra;
  const bytes = [];
  const keep = [];
  let errors = [];
  let upper = [];
  const decode = (k, r) => {
    const b = bytes[k];
    let s = '';
    for (let i = offsets[k * (R + 1) + r]; i < offsets[k * (R + 1) + r + 1]; i++) s += String.fromCharCode(b[i]);
    return decodeURIComponent(escape(s)); // UTF-8 bytes -> text
  };
  const month = (ms) => new Date(ms).getUTCMonth() + 1;
  function scoreRow(x, n, flag, word, when) {
    return x + n + 10 * flag + (word === null ? 0 : word.length) + (when === null ? 0 : month(when));
  }
  return {
    meta: {
      contract: 2, name: 'typed-toy', version: '1', inputs: inputs.map((f) => f.name), outputs: ['score'],
      maxBatch: 64,
      schema: {
        inputs: [...inputs, { name: 'len', type: 'int', derived: true }], derived: ['len'],
        features: ['x', 'n', 'flag', 'len', 'when.month'],
        output: { kind: 'regression', names: ['score'] },
        extras: [{ name: 'double', type: 'float' }, { name: 'upper', type: 'string' }],
      },
    },
    init() {},
    kernel: 'hand-written',
    columns(rows) {
      R = rows;
      const b = [new ArrayBuffer(numeric.length * rows * 8), new ArrayBuffer(inputs.length * rows),
        new ArrayBuffer((rows + 1) * 4), new ArrayBuffer(rows), new ArrayBuffer(rows * 4), new ArrayBuffer(rows * 8),
        new ArrayBuffer(8)];
      num = new Float64Array(b[0]); valid = new Uint8Array(b[1]); offsets = new Int32Array(b[2]);
      status = new Uint8Array(b[3]); out = new Float32Array(b[4]); extra = new Float64Array(b[5]);
      bytes[0] = new Uint8Array(b[6]);
      keep.push(...b);
      return b;
    },
    reserve(k, n) {
      const buf = new ArrayBuffer(n);
      keep.push(buf);
      bytes[k] = new Uint8Array(buf);
      return buf;
    },
    predictColumns(n) {
      errors = [];
      upper = new Array(n).fill(null);
      let refused = 0;
      for (let r = 0; r < n; r++) {
        out[r] = 0;
        if (status[r] !== 0) continue;
        const word = valid[3 * R + r] ? decode(0, r) : null;
        if (!valid[0 * R + r] || word === 'bad') {
          status[r] = 2;
          refused++;
          errors.push([r, word === 'bad' ? "input 'word' is bad" : "input 'x' is null and has no default or impute"]);
          continue;
        }
        const s = scoreRow(num[0 * R + r], num[1 * R + r], num[2 * R + r], word, valid[4 * R + r] ? num[3 * R + r] : null);
        out[r] = s;
        extra[r] = 2 * s;
        upper[r] = word === null ? null : word.toUpperCase();
      }
      return refused;
    },
    rowErrors() { return errors; },
    extraStrings() { return { upper }; },
    predict(records) {
      return records.map((rec) => {
        if (rec.x === null || rec.x === undefined) return { error: "input 'x' is null and has no default or impute" };
        const when = rec.when === null || rec.when === undefined ? null : typeof rec.when === 'number' ? rec.when : Date.parse(rec.when);
        const s = Math.fround(scoreRow(rec.x, rec.n, rec.flag ? 1 : 0, rec.word ?? null, when));
        return { scores: [s], value: s };
      });
    },
    selfTest: {
      records: [{ x: 1.5, n: 2, flag: true, word: 'ab', when: '2024-03-05T10:00:00Z' },
        { x: -1, n: 0, flag: false, word: null, when: null }],
      expected: [[1.5 + 2 + 10 + 2 + 3], [-1]],
      tolerance: 1e-6,
    },
  };
})();
