"""The TFRecord schema, shared by the writer (data_prep) and the reader.

One record is a `tf.train.Example` with two features (serialized with
`deterministic=True`, so the same data gives byte-identical shards):
- `image`: the raw uint8 pixels of one H x W x C image, row-major, as bytes;
- `label`: the class id, an int64 in [0, num_classes).

The image shape is not stored per record; it is recorded once in
`stats.json` (see `manifest.py`). Shards of a split are named
`<split>-00000-of-00014.tfrecord`, numbered from 0. Readers parse whole
batches of serialized records at once (`parse_batch`), which is much faster
than parsing one record at a time.
"""

import re

import numpy as np
import tensorflow as tf

IMAGE_KEY = 'image'
LABEL_KEY = 'label'
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


def serialize_example(image, label):
  """Serializes one uint8 H x W x C image and its integer label."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f'Images must be uint8. Received: dtype={image.dtype}')
  feature = {
      IMAGE_KEY: tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[image.tobytes()])),
      LABEL_KEY: tf.train.Feature(
          int64_list=tf.train.Int64List(value=[int(label)])),
  }
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString(deterministic=True)


def parse_batch(serialized, image_shape):
  """Parses a batch of serialized records.

  Args:
    serialized: string tensor of shape [B].
    image_shape: (H, W, C) of every image, from stats.json.

  Returns:
    (images, labels): uint8 [B, H, W, C] and int64 [B].
  """
  features = tf.io.parse_example(serialized, {
      IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
      LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
  })
  images = tf.io.decode_raw(features[IMAGE_KEY], tf.uint8)
  images = tf.reshape(images, [-1, *image_shape])
  return images, features[LABEL_KEY]
