// What both the spec's validation (spec.js) and the output kinds (outputs.js) need to say what is wrong.

export class SpecError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SpecError';
  }
}

const q = (s) => "'" + s + "'";

export const isObj = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
export const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

// A typo is an error, not an ignored field (as model/spec.py reads a spec).
export function known(obj, fields, where) {
  for (const key of Object.keys(obj)) {
    if (!fields.includes(key)) throw new SpecError(`${where}: unknown field ${q(key)} (known: ${fields.join(', ')})`);
  }
}
