"""Writes one split as TFRecord shards, each atomically (temp name, rename)."""

import os

import numpy as np
import tensorflow as tf

from data_prep.progress import Progress
from normprop_tf.data import manifest
from normprop_tf.data import schema

TMP_SUFFIX = '.tmp'
# Auto sharding aims at shards of about this many bytes.
TARGET_SHARD_BYTES = 10 * 2**20


def auto_num_shards(num_examples, bytes_per_example):
  return int(max(1, min(num_examples,
                        round(num_examples * bytes_per_example /
                              TARGET_SHARD_BYTES))))


def write_split(data_dir, split, images, labels, num_shards):
  """Writes `split` into `num_shards` shards of consecutive examples.

  Returns:
    The manifest entries: [{'file', 'num_examples', 'bytes', 'sha256'}, ...].
  """
  entries = []
  progress = Progress(f'write {split}', len(labels))
  bounds = np.linspace(0, len(labels), num_shards + 1).astype(int)
  for k in range(num_shards):
    name = schema.shard_filename(split, k, num_shards)
    path = os.path.join(data_dir, name)
    tmp = path + TMP_SUFFIX
    try:
      with tf.io.TFRecordWriter(tmp) as writer:
        for i in range(bounds[k], bounds[k + 1]):
          writer.write(schema.serialize_example(images[i], labels[i]))
          progress.update()
      tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
      if tf.io.gfile.exists(tmp):
        tf.io.gfile.remove(tmp)
    entries.append({
        'file': name,
        'num_examples': int(bounds[k + 1] - bounds[k]),
        'bytes': int(tf.io.gfile.stat(path).length),
        'sha256': manifest.file_sha256(path),
    })
  progress.done()
  return entries
