"""Bad bundles for the failure cases, all in one place.

Each is the real v2 bundle with JavaScript appended that breaks one part of the contract, so
everything but the fault is a genuine, working bundle. (The store that fails on demand is the HTTP
store, `tests.support.http_store`: its faults are injected over its control API.)
"""

from __future__ import annotations

PATCHES: dict[str, str] = {
    # Not parseable at all.
    "syntax_error": "\n;function (",
    # Evaluates, then throws at top level.
    "throws_at_eval": "\n;throw new Error('boom at eval');",
    # No `ml` global at all.
    "missing_ml": "\n;delete globalThis.ml;",
    # init() returns a promise that never settles.
    "init_never_resolves": "\n;globalThis.ml.init = () => new Promise(() => {});",
    # init() rejects.
    "init_rejects": "\n;globalThis.ml.init = async () => { throw new Error('weights corrupt'); };",
    # predictBuffer loops forever.
    "infinite_loop": "\n;globalThis.ml.predictBuffer = function (n) { for (;;) {} };",
    # init blows the heap.
    "heap_blowup": "\n;globalThis.ml.init = function () { const a = []; for (;;) a.push(new Array(1e5).fill(1.5)); };",
    # predictBuffer claims fewer values than n * outputs.
    "wrong_output_size": """
;(() => { const real = globalThis.ml.predictBuffer;
  globalThis.ml.predictBuffer = function (n) { return real(n) - n; }; })();""",
    # ml.buffers hands back an output buffer too small for the rows asked.
    "small_output_buffer": """
;(() => { const real = globalThis.ml.buffers;
  globalThis.ml.buffers = function (rows) { const b = real(rows); return [b[0], new ArrayBuffer(4)]; }; })();""",
    # predictBuffer writes NaN.
    "nan_output": """
;(() => { const real = globalThis.ml.predictBuffer; const bufs = globalThis.ml.buffers;
  let out = null;
  globalThis.ml.buffers = function (rows) { const b = bufs(rows); out = new Float32Array(b[1]);
  return b; };
  globalThis.ml.predictBuffer = function (n) { const k = real(n); out[0] = NaN; return k; }; })();""",
    # selfTest expectations that the model does not reproduce.
    "selftest_mismatch": "\n;globalThis.ml.selfTest.expected[1][0] += 0.25;",
    # meta that breaks the contract.
    "bad_meta": "\n;globalThis.ml = Object.assign({}, globalThis.ml, {meta: {name: 'x', inputs: [], outputs: ['a']}});",
    # predictBuffer schedules a timer that loops forever: it would run between host calls,
    # outside every call timeout, and hang the next call for good. The host offers no timers.
    "timer_loops": """
;(() => { const real = globalThis.ml.predictBuffer;
  globalThis.ml.predictBuffer = function (n) { setTimeout(() => { for (;;) {} }, 1); return real(n); }; })();""",
    # the same through Atomics.waitAsync, which mini-racer's timers are built on.
    "wait_async_loops": """
;(() => { const real = globalThis.ml.predictBuffer;
  globalThis.ml.predictBuffer = function (n) {
    Atomics.waitAsync(new Int32Array(new SharedArrayBuffer(8)), 0, 0, 1).value.then(() => { for (;;) {} });
    return real(n); }; })();""",
    # predictBuffer queues a promise callback that never ends: it runs after the call has
    # returned, outside its timeout, and the next call could not even start.
    "microtask_loops": """
;(() => { const real = globalThis.ml.predictBuffer;
  globalThis.ml.predictBuffer = function (n) { Promise.resolve().then(() => { for (;;) {} }); return real(n); }; })();""",
    # JSON.stringify broken by the bundle: the host's probes read text that is not JSON.
    "stringify_garbage": "\n;JSON.stringify = () => '{\"meta\": oops';",
    # ...or no text at all.
    "stringify_undefined": "\n;JSON.stringify = () => undefined;",
    # 16 ArrayBuffers of 256 MiB, filled: 4 GiB outside the V8 heap, which its limit never sees.
    # Only the trial process (reloader.sandbox) stops it; never build it in a test's own process.
    "arraybuffer_blowup": """
;globalThis.ml.init = function () { globalThis.keep = [];
  for (let i = 0; i < 16; i++) keep.push(new Uint8Array(256 * 1024 * 1024).fill(1)); };""",
    # The same 1 MiB at a time: each allocation is small, the resident set is what grows.
    "arraybuffer_drip": """
;globalThis.ml.init = function () { globalThis.keep = [];
  for (;;) keep.push(new Uint8Array(1 << 20).fill(1)); };""",
    # init() that never returns (a loop, not a promise: the call itself must be stopped).
    "init_loops": "\n;globalThis.ml.init = function () { for (;;) {} };",
    # a JS error thrown from predictBuffer, with a long line in the message.
    "throws_in_predict": "\n;globalThis.ml.predictBuffer = function (n) { throw new Error('x'.repeat(20000)); };",
}


def bad_bundle(good: bytes, kind: str) -> bytes:
    return good + PATCHES[kind].encode()


# Passes its self-test and warm-up, then loops forever on one input: alcohol == 999.
POISON_LOOP = """
;(() => { const real = globalThis.ml.predictBuffer; const bufs = globalThis.ml.buffers;
  let input = null;
  globalThis.ml.buffers = function (rows) { const b = bufs(rows); input = new Float32Array(b[0]);
  return b; };
  globalThis.ml.predictBuffer = function (n) { if (input[0] === 999) { for (;;) {} }
  return real(n); }; })();"""


# A working bundle that throws on every call made more than 10 s after it was built (its load,
# self-test and trial load come well within that): a candidate that breaks once it serves.
FAILS_WHEN_SERVING = """
;(() => { const real = globalThis.ml.predictBuffer; const built = Date.now();
  globalThis.ml.predictBuffer = function (n) {
    if (Date.now() - built > 10000) { throw new Error('this candidate broke after 10 s'); }
    return real(n); }; })();"""


# A working bundle (not in PATCHES: only a typed job refuses it) that declares its input 'ash' as
# 'ash_ppm': a job whose columns were fixed for the real bundle lacks that input, so
# reloader.compat refuses the version.
RENAMED_INPUT = """
;globalThis.ml.meta = Object.assign({}, globalThis.ml.meta,
  {inputs: globalThis.ml.meta.inputs.map((n) => (n === 'ash' ? 'ash_ppm' : n))});"""
