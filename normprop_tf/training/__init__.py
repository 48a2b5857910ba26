"""normprop_tf.training: the TensorFlow training side (tf.distribute, gin).

TensorFlow-only; `import normprop_tf` does not import it.

- `config`: the configurable components and their gin names.
- `builders`: model, schedule, optimizer, input, probe; one thing each.
- `experiment`: `build` (everything before training) and `run`.
- `trainer`: the loop (cadence, evaluation, non-finite guard, checkpoints).
- `steps`: the compiled train and evaluation steps.
- `records`, `artifacts`: metrics.jsonl, summary.json, config.json; the
  operative config, HParams and the final model.
- `checkpointing`, `hidden_stats`, `progress`, `strategies`, `gin_config`,
  `errors`, `cli`.

`python -m normprop_tf.train` is the entry point.
"""
