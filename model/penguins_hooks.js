// The penguins example's own JavaScript (docs/model-spec.md, "Hooks"): what the declarative steps
// cannot say. `model/train_penguins.py` computes the same in Python for training (its `derive`),
// and the build compares the two on sample records.

// Before the declarative steps: a feature from two fields, and text normalisation.
export function prepare(batch) {
  const length = batch.get('bill_length_mm');
  const depth = batch.get('bill_depth_mm');
  const ratio = new Float64Array(batch.n);
  for (let i = 0; i < batch.n; i++) ratio[i] = length[i] / depth[i]; // NaN (null) if either is null
  // Field data arrives as "MALE", " female" or "Male": the vocabulary has "female" and "male".
  const sex = batch.get('sex').map((s) => (s === null ? null : s.trim().toLowerCase()));
  return { bill_ratio: ratio, sex };
}

// After the model: how sure it is, as two extra output fields.
export function finish(batch, result) {
  const margin = new Float64Array(batch.n);
  const confidence = new Array(batch.n);
  const k = result.width;
  for (let i = 0; i < batch.n; i++) {
    let first = 0;
    let second = 0;
    for (let j = 0; j < k; j++) {
      const p = result.scores[i * k + j];
      if (p > first) {
        second = first;
        first = p;
      } else if (p > second) {
        second = p;
      }
    }
    margin[i] = first - second;
    confidence[i] = margin[i] >= 0.5 ? 'high' : 'low';
  }
  return { margin, confidence };
}
