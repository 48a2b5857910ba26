"""TFDS as a data source, failing fast when the download host is offline.

When the dataset is not already in the TFDS data dir (and no archive waits
in its `downloads/manual/`), the download host is probed first with a 5 s
TCP connection, so an offline machine fails at once with a message naming
the local alternatives instead of hanging in a download.
"""

import os
import socket

from absl import logging
import numpy as np

from normprop_tf.data.errors import DataError
from normprop_tf.data.preparation import options
from normprop_tf.data.preparation.progress import Progress

TFDS_NAMES = options.TFDS_NAMES
# (host, port) that TFDS downloads each dataset from.
TFDS_HOSTS = {'cifar10': ('www.cs.toronto.edu', 443),
              'cifar100': ('www.cs.toronto.edu', 443),
              'svhn': ('ufldl.stanford.edu', 80)}


def check_reachable(host, port, timeout=5.0):
  """Raises OSError when (host, port) cannot be connected within `timeout`."""
  with socket.create_connection((host, port), timeout=timeout):
    pass


def _ensure_downloadable(builder, dataset, timeout):
  root = os.path.dirname(os.path.dirname(os.fspath(builder.data_dir)))
  manual = os.path.join(root, 'downloads', 'manual')
  if os.path.isdir(manual) and os.listdir(manual):
    return root
  host, port = TFDS_HOSTS[dataset]
  try:
    check_reachable(host, port, timeout)
  except OSError as e:
    raise DataError(
        f'TFDS cannot download {TFDS_NAMES[dataset]}: {host}:{port} is '
        f'unreachable ({e}). Use a local copy instead, e.g. '
        '--source=cifar10-jpg.tar.gz (a folder of class subfolders or a '
        '.tar.gz of one, or cifar-10-python.tar.gz), or put the TFDS archive '
        f'in {manual}/.') from None
  return root


def load_tfds(dataset, tfds_data_dir=None, use_extra=True, timeout=5.0):
  """{split: (uint8 images, int64 labels)} and the class names, via TFDS."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = TFDS_NAMES[dataset]
  builder = tfds.builder(name, data_dir=tfds_data_dir)
  if not builder.is_prepared():
    root = _ensure_downloadable(builder, dataset, timeout)
    logging.info('TFDS: downloading and preparing %s into %s', name, root)
    builder.download_and_prepare()
  splits = ['train', 'test'] + (['extra'] if dataset == 'svhn' and use_extra
                                else [])
  out = {}
  for split in splits:
    images, labels = [], []
    ds = builder.as_dataset(split=split, batch_size=4096, as_supervised=True)
    total = (builder.info.splits[split].num_examples
             if split in builder.info.splits else 0)
    progress = Progress(f'tfds {name} {split}', total=total)
    for x, y in tfds.as_numpy(ds):
      images.append(x)
      labels.append(y)
      progress.update(len(y))
    progress.done()
    out[split] = (np.concatenate(images).astype(np.uint8),
                  np.concatenate(labels).astype(np.int64))
  return out, list(builder.info.features['label'].names)
