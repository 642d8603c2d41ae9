// A TF.js graph model (tensorflowjs_converter --input_format=tf_saved_model) behind the interface of
// layers.js. Bundled only for graph models: tfjs-converter would add to every bundle otherwise.
import * as tf from '@tensorflow/tfjs-core';
import { loadGraphModel } from '@tensorflow/tfjs-converter';
import { concatOutputs } from './tfjs.js';
import { base64Decode } from './platform.js';

// tfjs-converter decodes the string attributes of a converted SavedModel with `atob`, which a bare
// V8 lacks (and Node's vm context too): the same decoding from platform.js, as a binary string.
if (typeof globalThis.atob !== 'function') {
  globalThis.atob = (text) => {
    const bytes = base64Decode(String(text));
    let out = '';
    for (let i = 0; i < bytes.length; i += 8192) out += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
    return out;
  };
}

// The converter fuses MatMul + BiasAdd + Tanh of a SavedModel into one _FusedMatMul, whose CPU kernel
// knows every fused activation but tanh ("Activation tanh has not been implemented for the CPU
// backend", measured with TF 2.19 / TF.js 4.22). Tanh is then applied after the linear product.
const UNFUSED = { tanh: 'Tanh' };

function patchFusedMatMul() {
  const original = tf.getKernel('_FusedMatMul', 'cpu');
  if (!original || original.patchedByTfOnFlink) return;
  tf.unregisterKernel('_FusedMatMul', 'cpu');
  tf.registerKernel({
    kernelName: '_FusedMatMul',
    backendName: 'cpu',
    patchedByTfOnFlink: true,
    kernelFunc(args) {
      const op = UNFUSED[args.attrs.activation];
      if (!op) return original.kernelFunc(args);
      const linear = original.kernelFunc({ ...args, attrs: { ...args.attrs, activation: 'linear' } });
      const out = tf.getKernel(op, 'cpu').kernelFunc({ inputs: { x: linear }, backend: args.backend, attrs: {} });
      args.backend.disposeIntermediateTensorInfo(linear);
      return out;
    },
  });
}

export async function loadModel(MODEL, weightData) {
  patchFusedMatMul();
  const model = await loadGraphModel(tf.io.fromMemory({ ...MODEL.artifacts, weightSpecs: MODEL.weightSpecs, weightData }));
  if (model.inputs.length !== 1) {
    throw new Error(`the graph model takes ${model.inputs.length} inputs; a spec feeds it one feature vector`);
  }
  const shape = model.inputs[0].shape || [];
  const inputWidth = shape.length ? shape[shape.length - 1] : -1;
  const run = (x, n, width) => tf.tidy(() => model.execute(tf.tensor2d(x.subarray(0, n * width), [n, width], 'float32')));
  // Output shapes are not always in the signature: one row of zeros tells them.
  let outputWidths = [];
  if (inputWidth > 0) {
    const probe = run(new Float32Array(inputWidth), 1, inputWidth);
    const list = Array.isArray(probe) ? probe : [probe];
    outputWidths = list.map((t) => (t.shape.length === 2 ? t.shape[1] : t.shape.length === 1 ? 1 : -1));
    tf.dispose(list);
  }
  return {
    kind: 'graph',
    model,
    inputWidth,
    outputWidths,
    run(x, n, width, out) {
      concatOutputs(run(x, n, width), n, out);
    },
  };
}
