"""normprop_tf.fit: the paper's experiments with `model.fit`, no TensorFlow.

For accelerators that have Keras' JAX backend and no TensorFlow:
`KERAS_BACKEND=jax python -m normprop_tf.train_jax --gin_file=... --model_dir=...`
trains the same gin experiments as `python -m normprop_tf.train`, with the
same model, optimizer, schedule, split, statistics and augmentation
definition, and writes the same plain records (`runner`).

- `data`: the dataset as NumPy arrays, decoded with Pillow, cached.
- `inputs`: preprocessing, augmentation and the training batches.
- `callbacks`: records, evaluation and the stop at `total_steps`.
- `runner`: `run(model_dir, name)`; `cli`: the command line's body.
"""
