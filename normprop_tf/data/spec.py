"""What the data package knows without TensorFlow: datasets, formats, names.

The datasets the preparation knows (image shape, classes), the
preprocessing and verification choices, and the shard file names of a
prepared data_dir. TensorFlow-free, so the training configuration and the
Keras-only runner (`normprop_tf.fit`) can use them on any backend.
"""

import re

# Datasets the preparation tool knows, with their fixed image shape and
# number of classes.
DATASETS = {
    'cifar10': {'image_shape': (32, 32, 3), 'num_classes': 10},
    'cifar100': {'image_shape': (32, 32, 3), 'num_classes': 100},
    'svhn': {'image_shape': (32, 32, 3), 'num_classes': 10},
}
PREPROCESSINGS = ('standardize', 'zca', 'minibatch', 'none')
VERIFY_LEVELS = ('full', 'size', 'none')
# JPEG decoding: 'accurate' is libjpeg's exact integer IDCT (what Pillow and
# most readers use); 'tf_default' is TensorFlow's former, system-specific
# default (a fast IDCT on x86 builds).
JPEG_IDCT = ('accurate', 'tf_default')
# Bump when the record layout or the meaning of stats.json changes.
FORMAT_VERSION = 1
SPLITS = ('train', 'validation', 'test')
_SHARD_RE = re.compile(r'^(?P<split>[a-z_]+)-(?P<index>\d{5})-of-'
                       r'(?P<count>\d{5})\.tfrecord$')


def shard_filename(split, index, num_shards):
  """`train-00003-of-00014.tfrecord` for split 'train', index 3 of 14."""
  if not 0 <= index < num_shards <= 99999:
    raise ValueError(f'Shard index out of range. Received: index={index}, '
                     f'num_shards={num_shards}')
  return f'{split}-{index:05d}-of-{num_shards:05d}.tfrecord'


def parse_shard_filename(name):
  """Returns (split, index, num_shards) for a shard file name, else None."""
  match = _SHARD_RE.match(name)
  if not match:
    return None
  return match['split'], int(match['index']), int(match['count'])
