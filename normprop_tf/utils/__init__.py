"""Small backend-free helpers shared by the library, data and training code.

- `checks`: argument validation with one message format.
- `fileio`: atomic writes (local or through `tf.io.gfile` for remote paths).
- `hardware`: a description of the machine, for records and benchmarks.

None of these imports TensorFlow at module level.
"""
