// Shared by the model loaders: TF.js output tensors -> one float32 matrix.

// result: a tensor [n x w] or an array of them (a model with several outputs) -> out [n x sum(w)], row-major,
// each row the outputs side by side in the model's order. Disposes the tensors.
export function concatOutputs(result, n, out) {
  const list = Array.isArray(result) ? result : [result];
  try {
    if (list.length === 1) {
      out.set(list[0].dataSync().subarray(0, out.length));
      return;
    }
    const widths = list.map((t) => (t.shape.length > 1 ? t.shape[1] : 1));
    const total = widths.reduce((a, b) => a + b, 0);
    let offset = 0;
    list.forEach((t, h) => {
      const data = t.dataSync();
      const w = widths[h];
      for (let r = 0; r < n; r++) {
        for (let j = 0; j < w; j++) out[r * total + offset + j] = data[r * w + j];
      }
      offset += w;
    });
  } finally {
    for (const t of list) t.dispose();
  }
}
