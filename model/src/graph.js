// A TF.js graph model (tensorflowjs_converter --input_format=tf_saved_model) behind the interface of
// layers.js. Bundled only for graph models: tfjs-converter would add to every bundle otherwise.
import * as tf from '@tensorflow/tfjs-core';
import { loadGraphModel } from '@tensorflow/tfjs-converter';
import { concatOutputs } from './tfjs.js';

export async function loadModel(MODEL, weightData) {
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
