"""Writes one split as TFRecord shards, each atomically (temp name, rename).

Temporary names carry the process id (`<shard>.tmp-<pid>`), so two
processes never write the same temporary file; `is_temporary` recognises
them all, for clean-up.
"""

import os

import numpy as np
import tensorflow as tf

from normprop_tf.data import manifest
from normprop_tf.data import schema
from normprop_tf.data.preparation.progress import Progress

TMP_MARKER = '.tmp'
# Auto sharding aims at shards of about this many bytes.
TARGET_SHARD_BYTES = 10 * 2**20


def temporary_name(path):
  """A temporary name for `path` that no other process uses."""
  return f'{path}{TMP_MARKER}-{os.getpid()}'


def is_temporary(name):
  """Whether `name` is a temporary file left by any (killed) writer."""
  return TMP_MARKER in os.path.basename(name)


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
    tmp = temporary_name(path)
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
