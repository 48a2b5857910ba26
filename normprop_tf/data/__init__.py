"""normprop_tf.data: TFRecord input pipeline with NormProp's input statistics.

    ds = make_dataset('/tmp/np_data', 'train', 128, preprocessing='standardize',
                      augment=True, seed=0)

The records and statistics are written by `python -m data_prep.prepare`
(`normprop_tf.data.preparation`). The pipeline, the record schema and the
augmentation use TensorFlow; `spec`, `errors`, `manifest` and `stats` do not,
so the Keras-only runner (`normprop_tf.fit`) shares them on any backend.
The names below are imported when first used, which keeps
`import normprop_tf.data.stats` free of TensorFlow.
"""

import importlib

_EXPORTS = {
    'augment_batch': 'augment', 'DataError': 'errors', 'DATASETS': 'spec',
    'prepare_command': 'errors', 'InputNormalization': 'input_normalization',
    'load_manifest': 'manifest', 'verify_split': 'manifest',
    'make_dataset': 'pipeline', 'read_split': 'pipeline',
    'PREPROCESSINGS': 'spec', 'load_stats': 'stats', 'Stats': 'stats',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  module = importlib.import_module(f'{__name__}.{_EXPORTS[name]}')
  return getattr(module, name)
