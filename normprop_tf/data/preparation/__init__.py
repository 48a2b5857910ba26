"""Dataset preparation: a source (TFDS, class folders, archives) to TFRecords.

    from normprop_tf.data import preparation
    preparation.prepare('cifar10', 'data/cifar10', source='cifar10-jpg.tar.gz')

`prepare` writes the shards, the input statistics and the manifest;
`ensure_prepared` does so only when a data_dir is missing (training calls
it). `python -m data_prep.prepare` is the command-line front end. Writing
uses TensorFlow; `class_folders`, `splits` and `cifar_pickle` do not (the
Keras-only runner reads sources with them), so the two names below are
imported when first used.
"""

import importlib

_EXPORTS = {'ensure_prepared': 'auto', 'prepare': 'preparer'}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  module = importlib.import_module(f'{__name__}.{_EXPORTS[name]}')
  return getattr(module, name)
