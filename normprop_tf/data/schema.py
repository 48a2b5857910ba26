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

import numpy as np
import tensorflow as tf

from normprop_tf.data import spec

FORMAT_VERSION = spec.FORMAT_VERSION
SPLITS = spec.SPLITS
shard_filename = spec.shard_filename
parse_shard_filename = spec.parse_shard_filename
IMAGE_KEY = 'image'
LABEL_KEY = 'label'


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
