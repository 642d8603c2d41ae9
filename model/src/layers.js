// A TF.js layers model (tfjs.converters.save_keras_model) behind the small interface app.js uses.
import * as tf from '@tensorflow/tfjs-core';
import { loadLayersModel } from '@tensorflow/tfjs-layers';
import { concatOutputs } from './tfjs.js';

export async function loadModel(MODEL, weightData) {
  const model = await loadLayersModel(
    tf.io.fromMemory({ modelTopology: MODEL.artifacts.modelTopology, weightSpecs: MODEL.weightSpecs, weightData }),
  );
  if (model.inputs.length !== 1) {
    throw new Error(`the model takes ${model.inputs.length} inputs; a spec feeds it one feature vector`);
  }
  const last = (shape) => shape[shape.length - 1];
  return {
    kind: 'layers',
    model,
    inputWidth: last(model.inputs[0].shape),
    outputWidths: model.outputs.map((o) => last(o.shape)),
    // x: float32 [n x width] -> out: float32 [n x sum(outputWidths)], the outputs side by side per row.
    run(x, n, width, out) {
      const result = tf.tidy(() => model.predictOnBatch(tf.tensor2d(x.subarray(0, n * width), [n, width], 'float32')));
      concatOutputs(result, n, out);
    },
  };
}
