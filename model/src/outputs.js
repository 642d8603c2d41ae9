// Output kinds (docs/model-spec.md, "Output kinds"): the declaration validated, the model's output widths checked
// against it, a regression's scale applied to the scores, and the decoded fields of one row's scores.
import { SpecError, isNum, isObj, known } from './errors.js';

const q = (s) => "'" + s + "'";
const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
const KINDS = ['multiclass', 'binary', 'regression', 'multi'];
// Fields of the job's output records: an extra may not take one of these names.
export const RESERVED = ['id', 'label', 'score', 'probabilities', 'probability', 'top_k', 'value', 'values',
  'error', 'model_version', 'model_sha256', 'subtask', '_invalid'];

const OUTPUT_FIELDS = {
  multiclass: ['kind', 'labels', 'top_k'],
  binary: ['kind', 'labels', 'threshold'],
  regression: ['kind', 'names', 'scale'],
  multi: ['kind', 'heads'],
};

function columnList(v, n, what, where) {
  if (isNum(v)) return new Array(n).fill(v);
  if (Array.isArray(v) && v.length === n && v.every(isNum)) return v.slice();
  throw new SpecError(`${where}: ${what} must be a number or one number per name`);
}

// `minLabels`: 1 for a legacy app.json, whose single output contract 1 took as a one-label multiclass.
export function normalizeOutput(o, where, top = true, minLabels = 2) {
  if (!isObj(o)) throw new SpecError(`${where} must be an object {kind, ...}`);
  if (!KINDS.includes(o.kind) || (!top && o.kind === 'multi')) {
    throw new SpecError(`${where}: unknown kind ${JSON.stringify(o.kind)} (known: ${(top ? KINDS : KINDS.slice(0, 3)).join(', ')})`);
  }
  known(o, top ? OUTPUT_FIELDS[o.kind] : ['name', ...OUTPUT_FIELDS[o.kind]], where);
  const strings = (v, what, n) => {
    if (!Array.isArray(v) || v.length < n || !v.every((s) => typeof s === 'string' && s !== '')) {
      throw new SpecError(`${where} (${o.kind}): ${what} must be a list of at least ${n} non-empty strings`);
    }
    if (new Set(v).size !== v.length) throw new SpecError(`${where} (${o.kind}): ${what} must be distinct`);
    return v.slice();
  };
  switch (o.kind) {
    case 'multiclass': {
      const labels = strings(o.labels, 'labels', minLabels);
      const topK = o.top_k === undefined || o.top_k === null ? 0 : o.top_k;
      if (!Number.isInteger(topK) || topK < 0 || topK > labels.length) {
        throw new SpecError(`${where} (multiclass): top_k must be an integer in 1..${labels.length}`);
      }
      return { kind: 'multiclass', labels, top_k: topK, columns: labels, width: labels.length };
    }
    case 'binary': {
      const labels = strings(o.labels, 'labels [negative, positive]', 2);
      if (labels.length !== 2) throw new SpecError(`${where} (binary): labels must be [negative, positive]`);
      const threshold = o.threshold === undefined ? 0.5 : o.threshold;
      if (!(isNum(threshold) && threshold > 0 && threshold < 1)) {
        throw new SpecError(`${where} (binary): threshold must be a number in (0, 1)`);
      }
      return { kind: 'binary', labels, threshold, columns: [labels[1]], width: 1 };
    }
    case 'regression': {
      const names = o.names === undefined ? ['value'] : strings(o.names, 'names', 1);
      let scale = null;
      if (o.scale !== undefined && o.scale !== null) {
        if (!isObj(o.scale)) throw new SpecError(`${where} (regression): scale must be {mean, std}`);
        const mean = columnList(o.scale.mean, names.length, 'scale.mean', where);
        const std = columnList(o.scale.std, names.length, 'scale.std', where);
        scale = { mean, std };
      }
      return { kind: 'regression', names, scale, columns: names, width: names.length };
    }
    default: {
      if (!Array.isArray(o.heads) || o.heads.length === 0) throw new SpecError(`${where} (multi): heads must be a non-empty list`);
      const heads = [];
      const seen = new Set();
      o.heads.forEach((h, i) => {
        const hw = `${where}.heads[${i}]`;
        if (!isObj(h) || typeof h.name !== 'string' || !NAME.test(h.name)) {
          throw new SpecError(`${hw}: needs a name matching [A-Za-z_][A-Za-z0-9_.-]*`);
        }
        if (seen.has(h.name)) throw new SpecError(`${hw}: duplicate head name ${q(h.name)}`);
        seen.add(h.name);
        const head = normalizeOutput(h, hw, false);
        head.name = h.name;
        heads.push(head);
      });
      const columns = [];
      for (const h of heads) for (const c of h.columns) columns.push(h.name + '.' + c);
      return { kind: 'multi', heads, columns, width: columns.length };
    }
  }
}

function heads(output) {
  // [{head, offset}] for every part of the output; a single kind is one unnamed head.
  if (output.kind !== 'multi') return [{ head: output, offset: 0 }];
  let offset = 0;
  return output.heads.map((head) => {
    const part = { head, offset };
    offset += head.width;
    return part;
  });
}

function widthProblem(head, width, where) {
  if (width === head.width) return null;
  switch (head.kind) {
    case 'multiclass':
      return `${where} has ${width} columns, but output multiclass has ${head.width} labels (${head.labels.join(', ')})`;
    case 'binary':
      return `${where} has ${width} columns, but output binary takes one (the positive label's probability)`;
    default:
      return `${where} has ${width} columns, but output regression names ${head.width} (${head.names.join(', ')})`;
  }
}

// The model's output widths (one per output tensor, in the model's order) against the spec; a message or null.
export function outputProblem(output, widths) {
  if (output.kind !== 'multi') {
    if (widths.length !== 1) {
      return `the model has ${widths.length} outputs, output ${output.kind} takes one ` +
        '(declare kind multi with one head per output)';
    }
    return widthProblem(output, widths[0], "the model's output");
  }
  if (widths.length !== output.heads.length) {
    return `the model has ${widths.length} output(s), output multi declares ${output.heads.length} heads ` +
      `(${output.heads.map((h) => h.name).join(', ')})`;
  }
  for (let i = 0; i < widths.length; i++) {
    const p = widthProblem(output.heads[i], widths[i], `the model's output ${i} (head ${output.heads[i].name})`);
    if (p) return p;
  }
  return null;
}

// scores [n x output.width] -> value = score * std + mean for every scaled regression column, in float64
// (rounded to float32 once, on the store).
export function compileScale(output) {
  const cols = [];
  for (const { head, offset } of heads(output)) {
    if (head.kind !== 'regression' || !head.scale) continue;
    head.names.forEach((_, j) => cols.push([offset + j, head.scale.mean[j], head.scale.std[j]]));
  }
  if (cols.length === 0) return null;
  const W = output.width;
  return function scale(scores, n) {
    for (const [c, mean, std] of cols) {
      for (let p = c, end = n * W; p < end; p += W) scores[p] = scores[p] * std + mean;
    }
  };
}

function decodeHead(head, s, base) {
  switch (head.kind) {
    case 'multiclass': {
      const k = head.labels.length;
      let best = 0;
      for (let j = 1; j < k; j++) if (s[base + j] > s[base + best]) best = j;
      const probabilities = {};
      head.labels.forEach((label, j) => {
        probabilities[label] = s[base + j];
      });
      const out = { label: head.labels[best], score: s[base + best], probabilities };
      if (head.top_k) {
        const order = head.labels.map((_, j) => j).sort((a, b) => s[base + b] - s[base + a] || a - b);
        out.top_k = order.slice(0, head.top_k).map((j) => [head.labels[j], s[base + j]]);
      }
      return out;
    }
    case 'binary': {
      const p = s[base];
      return { label: p >= head.threshold ? head.labels[1] : head.labels[0], probability: p };
    }
    default: {
      if (head.names.length === 1) return { value: s[base] };
      const values = {};
      head.names.forEach((name, j) => {
        values[name] = s[base + j];
      });
      return { values };
    }
  }
}

// One row's output fields (label/score/probabilities/top_k, label/probability, value/values, or one object per
// head) from scores[base .. base + output.width).
export function decodeOutput(output, scores, base) {
  if (output.kind !== 'multi') return decodeHead(output, scores, base);
  const out = {};
  for (const { head, offset } of heads(output)) out[head.name] = decodeHead(head, scores, base + offset);
  return out;
}
