"""Dataset preparation: a source (TFDS, class folders, archives) to TFRecords.

    from normprop_tf.data import preparation
    preparation.prepare('cifar10', 'data/cifar10', source='cifar10-jpg.tar.gz')

`prepare` writes the shards, the input statistics and the manifest;
`ensure_prepared` does so only when a data_dir is missing (training calls
it). `python -m data_prep.prepare` is the command-line front end.
TensorFlow-only.
"""

from normprop_tf.data.preparation.auto import ensure_prepared
from normprop_tf.data.preparation.preparer import prepare

__all__ = ['ensure_prepared', 'prepare']
