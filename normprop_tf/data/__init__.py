"""normprop_tf.data: TFRecord input pipeline with NormProp's input statistics.

TensorFlow-only; `import normprop_tf` does not import this package.

    ds = make_dataset('/tmp/np_data', 'train', 128, preprocessing='standardize',
                      augment=True, seed=0)

The records and statistics are written by `python -m data_prep.prepare`.
"""

from normprop_tf.data.augment import augment_batch
from normprop_tf.data.errors import DataError
from normprop_tf.data.errors import DATASETS
from normprop_tf.data.errors import prepare_command
from normprop_tf.data.input_normalization import InputNormalization
from normprop_tf.data.manifest import load_manifest
from normprop_tf.data.manifest import verify_split
from normprop_tf.data.pipeline import make_dataset
from normprop_tf.data.pipeline import read_split
from normprop_tf.data.preprocessing import PREPROCESSINGS
from normprop_tf.data.stats import load_stats
from normprop_tf.data.stats import Stats

__all__ = [
    'augment_batch', 'DataError', 'DATASETS', 'prepare_command',
    'InputNormalization', 'load_manifest', 'verify_split', 'make_dataset',
    'read_split', 'PREPROCESSINGS', 'load_stats', 'Stats',
]
