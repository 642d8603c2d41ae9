// dense-js' Dense steps in WebAssembly SIMD, emitted as bytes here (no toolchain), for compileDenseStack
// (kernels.js).
//
// One f64x2 vector holds two outputs of a row, so each output still sums in input order from its bias in double
// precision, one product and one sum at a time, as the JavaScript loops do: the results are the same to the bit.
// A plain ReLU is applied before the float32 store (pmax(0, v) is `v > 0 ? v : 0`, NaN -> 0 included); every other
// activation runs in JavaScript over the same memory.
//
// Why every input is unrolled: the job's V8 (mini-racer runs it --single-threaded) never tiers WebAssembly up
// from Liftoff, its baseline compiler (measured: --no-liftoff makes the loops below 2.4x faster). In Liftoff's code
// the inner step is fast only with each block's weights at constant addresses (a load from a computed address is
// bounds-checked) and with no loop around it: a load, a multiply and an add per two outputs, 0.09-0.10 ns a
// multiply-add on the zoo's `wide` (20 -> 64 -> 32 -> 3) and on 64 -> 64 -> 64, 3.5-4x faster than the JavaScript
// loops (0.36), where a loop over the inputs, or weights at computed addresses, measured 0.19-0.44 (TurboFan,
// were it to run: 0.11-0.13). The code grows with the weights (about 10 bytes a multiply-add), hence MAX_MACS.

const I32 = 0x7f;
const V128 = 0x7b;

/** Dense steps of up to this many multiply-adds (inSize * outSize) run here; larger ones in JavaScript loops. */
export const MAX_MACS = 65536;

// Outputs per block: 2 * VECTORS, in one f64x2 accumulator per two. Six vectors measured fastest (0.10 ns a
// multiply-add on `wide`, against 0.15 for four and 0.31 for seven, whose accumulators no longer fit in
// Liftoff's registers).
const VECTORS = 6;
const BLOCK = 2 * VECTORS;

// A growable byte buffer with the encodings used.
class Bytes {
  constructor() {
    this.a = new Uint8Array(1024);
    this.n = 0;
  }

  byte(b) {
    if (this.n === this.a.length) {
      const grown = new Uint8Array(this.a.length * 2);
      grown.set(this.a);
      this.a = grown;
    }
    this.a[this.n++] = b;
    return this;
  }

  bytes(list) {
    for (const b of list) this.byte(b);
    return this;
  }

  uleb(v) {
    do {
      const b = v & 0x7f;
      v >>>= 7;
      this.byte(v ? b | 0x80 : b);
    } while (v);
    return this;
  }

  sleb(v) {
    for (;;) {
      const b = v & 0x7f;
      v >>= 7;
      if ((v === 0 && !(b & 0x40)) || (v === -1 && b & 0x40)) return this.byte(b);
      this.byte(b | 0x80);
    }
  }

  view() {
    return this.a.subarray(0, this.n);
  }
}

// Instructions, by their text-format names. memarg: alignment (log2) and offset.
const op = {
  localGet: (c, i) => c.byte(0x20).uleb(i),
  localSet: (c, i) => c.byte(0x21).uleb(i),
  localTee: (c, i) => c.byte(0x22).uleb(i),
  i32Const: (c, v) => c.byte(0x41).sleb(v),
  i32Add: (c) => c.byte(0x6a),
  i32LtS: (c) => c.byte(0x48),
  loop: (c) => c.byte(0x03).byte(0x40),
  brIf: (c, l) => c.byte(0x0d).uleb(l),
  end: (c) => c.byte(0x0b),
  f32Store: (c, offset) => c.byte(0x38).byte(2).uleb(offset),
  f32DemoteF64: (c) => c.byte(0xb6),
  simd: (c, code) => c.byte(0xfd).uleb(code),
  v128Load: (c, offset) => op.simd(c, 0x00).byte(4).uleb(offset),
  v128Load32Splat: (c, offset) => op.simd(c, 0x09).byte(2).uleb(offset),
  v128Store: (c, offset) => op.simd(c, 0x0b).byte(4).uleb(offset),
  v128Zero: (c) => op.simd(c, 0x0c).bytes(new Array(16).fill(0)),
  lowHalves: (c) => op.simd(c, 0x0d).bytes([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]), // i8x16.shuffle
  f64x2ExtractLane: (c, lane) => op.simd(c, 0x21).byte(lane),
  f32x4DemoteF64x2Zero: (c) => op.simd(c, 0x5e),
  f64x2PromoteLowF32x4: (c) => op.simd(c, 0x5f),
  f64x2Add: (c) => op.simd(c, 0xf0),
  f64x2Mul: (c) => op.simd(c, 0xf2),
  f64x2Pmax: (c) => op.simd(c, 0xf7), // pmax(a, b) = a < b ? b : a
};

function name(c, s) {
  c.uleb(s.length);
  for (const ch of s) c.byte(ch.charCodeAt(0));
}

function section(c, id, content) {
  c.byte(id).uleb(content.n).bytes(content.view());
}

function moduleBytes(sections) {
  const c = new Bytes().bytes([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
  for (const [id, content] of sections) section(c, id, content);
  return c.view();
}

/** Whether this V8 runs WebAssembly with SIMD (checked once: a module using f64x2.add validates). */
export const available = (() => {
  try {
    if (typeof WebAssembly !== 'object') return false;
    const types = new Bytes().uleb(1).bytes([0x60, 0, 0]);
    const funcs = new Bytes().uleb(1).uleb(0);
    const body = new Bytes().uleb(0);
    op.v128Zero(body);
    op.v128Zero(body);
    op.f64x2Add(body);
    body.byte(0x1a); // drop
    op.end(body);
    const code = new Bytes().uleb(1).uleb(body.n).bytes(body.view());
    return WebAssembly.validate(moduleBytes([[1, types], [3, funcs], [10, code]]));
  } catch {
    return false;
  }
})();

// The body of dense(n, x, y) (byte addresses): y[r] = x[r] W + b for r < n, block by block of outputs, each block
// over every row (its code stays in the instruction cache: 2x faster than every block per row on 256 -> 256), its
// inputs unrolled. `d`: {inSize, outSize, relu, wOff, bOff} (byte addresses of the weights and the bias).
function denseBody(d) {
  const { inSize: I, outSize: O } = d;
  const c = new Bytes();
  // Locals: params 0 n, 1 x, 2 y; 3 xrow, 4 yrow, 5 rows left; the v128s: 6 the input, 7... the accumulators.
  const [N, X, Y, XROW, YROW, LEFT, XS] = [0, 1, 2, 3, 4, 5, 6];
  const acc = (v) => XS + 1 + v;
  c.uleb(2).uleb(3).byte(I32).uleb(1 + VECTORS).byte(V128);
  op.localGet(c, N);
  op.i32Const(c, 1);
  op.i32LtS(c);
  op.brIf(c, 0); // no rows
  let wOff = d.wOff;
  for (let out0 = 0; out0 < O; out0 += BLOCK) {
    const width = Math.min(BLOCK, O - out0);
    const vectors = Math.ceil(width / 2);
    const stride = vectors * 16;
    op.localGet(c, X);
    op.localSet(c, XROW);
    op.localGet(c, Y);
    op.localSet(c, YROW);
    op.localGet(c, N);
    op.localSet(c, LEFT);
    op.loop(c);
    for (let v = 0; v < vectors; v++) {
      op.i32Const(c, 0);
      op.v128Load(c, d.bOff + out0 * 8 + v * 16);
      op.localSet(c, acc(v));
    }
    for (let i = 0; i < I; i++) {
      op.localGet(c, XROW);
      op.v128Load32Splat(c, i * 4);
      op.f64x2PromoteLowF32x4(c);
      op.localSet(c, XS);
      for (let v = 0; v < vectors; v++) {
        op.localGet(c, acc(v));
        op.localGet(c, XS);
        op.i32Const(c, 0);
        op.v128Load(c, wOff + i * stride + v * 16);
        op.f64x2Mul(c);
        op.f64x2Add(c);
        op.localSet(c, acc(v));
      }
    }
    const value = (v) => {
      if (d.relu) op.v128Zero(c);
      op.localGet(c, acc(v));
      if (d.relu) op.f64x2Pmax(c);
    };
    let o = 0;
    for (; o + 4 <= width; o += 4) {
      op.localGet(c, YROW);
      value(o / 2);
      op.f32x4DemoteF64x2Zero(c);
      value(o / 2 + 1);
      op.f32x4DemoteF64x2Zero(c);
      op.lowHalves(c);
      op.v128Store(c, (out0 + o) * 4);
    }
    for (; o < width; o++) {
      op.localGet(c, YROW);
      value(o >> 1);
      op.f64x2ExtractLane(c, o & 1);
      op.f32DemoteF64(c);
      op.f32Store(c, (out0 + o) * 4);
    }
    for (const [local, step] of [[XROW, I * 4], [YROW, O * 4]]) {
      op.localGet(c, local);
      op.i32Const(c, step);
      op.i32Add(c);
      op.localSet(c, local);
    }
    op.localGet(c, LEFT);
    op.i32Const(c, -1);
    op.i32Add(c);
    op.localTee(c, LEFT);
    op.brIf(c, 0);
    op.end(c);
    wOff += I * stride;
  }
  op.end(c);
  return c;
}

const compiled = new WeakMap(); // plan -> {module, image, steps} | null

// The module and the weight image for a plan, once per plan (compileDenseStack runs per batch size), or null
// when no step runs here.
function compile(plan) {
  if (compiled.has(plan)) return compiled.get(plan);
  let bytes = 0;
  const take = (n) => {
    const at = bytes;
    bytes += Math.ceil(n / 16) * 16;
    return at;
  };
  const steps = plan.map((step) => {
    if (step.kind !== 'dense' || step.inSize * step.outSize > MAX_MACS) return null;
    const padded = Math.ceil(step.outSize / 2) * 2;
    const first = step.acts[0];
    const relu = first !== undefined && first.name === 'relu' && first.max === undefined;
    const wOff = take(step.inSize * padded * 8);
    return { inSize: step.inSize, outSize: step.outSize, relu, wOff, bOff: take(padded * 8) };
  });
  const dense = steps.filter((d) => d);
  if (!available || dense.length === 0) {
    compiled.set(plan, null);
    return null;
  }
  const image = new Float64Array(bytes / 8);
  plan.forEach((step, l) => {
    const d = steps[l];
    if (!d) return;
    const { inSize: I, outSize: O, w } = step;
    image.set(step.b, d.bOff / 8);
    let at = d.wOff / 8;
    for (let out0 = 0; out0 < O; out0 += BLOCK) {
      const width = Math.min(BLOCK, O - out0);
      const stride = Math.ceil(width / 2) * 2;
      for (let i = 0; i < I; i++, at += stride) {
        for (let j = 0; j < width; j++) image[at + j] = w[(out0 + j) * I + i];
      }
    }
  });
  const types = new Bytes().uleb(1).bytes([0x60, 3, I32, I32, I32, 0]); // (n, x, y) -> ()
  // The memory's declared minimum covers the weights, so their constant addresses need no bounds checks.
  const imports = new Bytes().uleb(1);
  name(imports, 'm');
  name(imports, 'm');
  imports.byte(0x02).byte(0x00).uleb(Math.max(1, Math.ceil(bytes / 65536)));
  const funcs = new Bytes().uleb(dense.length);
  const exports = new Bytes().uleb(dense.length);
  const code = new Bytes().uleb(dense.length);
  dense.forEach((d, k) => {
    funcs.uleb(0);
    name(exports, 'd' + k);
    exports.byte(0x00).uleb(k);
    const body = denseBody(d);
    code.uleb(body.n).bytes(body.view());
  });
  const sections = [[1, types], [2, imports], [3, funcs], [7, exports], [10, code]];
  const module = new WebAssembly.Module(moduleBytes(sections));
  const result = { module, image, steps };
  compiled.set(plan, result);
  return result;
}

// A WebAssembly memory (32-bit) holds at most 4 GiB; past 2 GiB of weights and rows (a huge maxBatch) the
// JavaScript loops run instead.
const MAX_MEMORY = 2 ** 31;

/**
 * The plan's Dense steps in WebAssembly, with `scratchBytes` more bytes of memory after the weights, or null when
 * none runs here (no WebAssembly SIMD, every Dense step larger than MAX_MACS, or more than MAX_MEMORY bytes).
 *
 * @returns {{memory: WebAssembly.Memory, base: number, dense: Array<{run: Function, relu: boolean} | null>}}:
 *   the scratch starts at byte `base`; dense[l].run(n, x, y) computes step l's products, bias and (where `relu`)
 *   its leading ReLU for n rows, from the float32 rows at byte x to those at byte y; null for the other steps.
 */
export function simdDense(plan, scratchBytes) {
  const c = compile(plan);
  if (c === null) return null;
  const base = c.image.byteLength;
  if (base + scratchBytes > MAX_MEMORY) return null;
  const memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil((base + scratchBytes) / 65536)) });
  new Float64Array(memory.buffer, 0, c.image.length).set(c.image);
  const { exports } = new WebAssembly.Instance(c.module, { m: { m: memory } });
  let k = 0;
  const dense = c.steps.map((d) => (d ? { run: exports['d' + k++], relu: d.relu } : null));
  return { memory, base, dense };
}
