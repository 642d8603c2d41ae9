// Strings as the columns carry them (UTF-8 bytes between offsets), matched against a vocabulary in place, with no
// JS string made: a small vocabulary as generated code (vocabCode), a large one as a hash table (ByteVocab).
import { utf8Decode } from './platform.js';

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

// A large vocabulary as an open-addressing hash table over the values' UTF-8 bytes: a lookup hashes and compares
// the row's bytes in place, with no string made. FNV-1a with its multiplication as shifts and adds: Math.imul
// costs ~8 ns a call in mini-racer (85-150 ns a lookup of a 10-byte word; 25-30 with the shifts).
export class ByteVocab {
  constructor(encoded) {
    this.lens = Int32Array.from(encoded, (b) => b.length);
    this.starts = new Int32Array(encoded.length);
    let total = 0;
    encoded.forEach((b, i) => {
      this.starts[i] = total;
      total += b.length;
    });
    this.pool = new Uint8Array(total);
    encoded.forEach((b, i) => this.pool.set(b, this.starts[i]));
    let size = 16;
    while (size < encoded.length * 4) size *= 2;
    this.mask = size - 1;
    this.table = new Int32Array(size).fill(-1);
    encoded.forEach((b, i) => {
      let slot = ByteVocab.hash(b, 0, b.length) & this.mask;
      while (this.table[slot] >= 0) slot = (slot + 1) & this.mask;
      this.table[slot] = i;
    });
  }

  static hash(bytes, s, e) {
    let h = 0x811c9dc5;
    for (let k = s; k < e; k++) {
      h ^= bytes[k];
      h = (h + (h << 1) + (h << 4) + (h << 7) + (h << 8) + (h << 24)) | 0; // h * 16777619 mod 2^32
    }
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

// A small vocabulary as generated code: by length, then a binary search on the byte that best splits what is
// left, then the remaining bytes against literals. In the row loop it is 2-5 ns a lookup, against 25-30 for the
// hash table (a call, a hash loop and a compare loop).
export const INLINE_VOCAB_BYTES = 512;

// Statements that set `id` to the index of bytes[s..e) in `encoded` (-1 if none), in a block labelled `label`.
export function vocabCode(encoded, bytes, label) {
  const values = encoded.map((b, id) => ({ id, b }));
  let cases = 0;
  const tree = (cands, tested, len) => {
    if (cands.length === 1) {
      const c = cands[0];
      const rest = [];
      for (let k = 0; k < len; k++) if (!tested.has(k)) rest.push(`${bytes}[s + ${k}] === ${c.b[k]}`);
      return `id = ${rest.length ? `${rest.join(' && ')} ? ${c.id} : -1` : c.id}; break ${label};`;
    }
    // The position whose byte leaves the smallest group (values are distinct, so one splits them).
    let best = -1;
    let bestSize = Infinity;
    for (let k = 0; k < len; k++) {
      if (tested.has(k)) continue;
      const counts = new Map();
      for (const c of cands) counts.set(c.b[k], (counts.get(c.b[k]) || 0) + 1);
      const size = Math.max(...counts.values());
      if (size < bestSize) {
        bestSize = size;
        best = k;
      }
    }
    const groups = new Map();
    for (const c of cands) {
      if (!groups.has(c.b[best])) groups.set(c.b[best], []);
      groups.get(c.b[best]).push(c);
    }
    const sorted = [...groups.entries()].sort((a, b) => a[0] - b[0]);
    const next = new Set(tested).add(best);
    const c = `c${cases++}`;
    const search = (lo, hi) => {
      if (hi - lo <= 3) return sorted.slice(lo, hi).map(([v, g]) => `if (${c} === ${v}) { ${tree(g, next, len)} }`).join('\n');
      const mid = (lo + hi) >> 1;
      return `if (${c} < ${sorted[mid][0]}) { ${search(lo, mid)} } else { ${search(mid, hi)} }`;
    };
    return `{ const ${c} = ${bytes}[s + ${best}];\n${search(0, sorted.length)}\n}`;
  };
  const byLength = new Map();
  for (const v of values) {
    if (!byLength.has(v.b.length)) byLength.set(v.b.length, []);
    byLength.get(v.b.length).push(v);
  }
  // The lengths by a binary search too.
  const lengths = [...byLength.keys()].sort((a, b) => a - b);
  const byLen = (lo, hi) => {
    if (hi - lo <= 3) {
      return lengths.slice(lo, hi).map((len) => `if (len === ${len}) { ${tree(byLength.get(len), new Set(), len)} }`).join('\n');
    }
    const mid = (lo + hi) >> 1;
    return `if (len < ${lengths[mid]}) { ${byLen(lo, mid)} } else { ${byLen(mid, hi)} }`;
  };
  return `${label}: {\nconst len = e - s;\n${byLen(0, lengths.length)}\nid = -1;\n}`;
}
