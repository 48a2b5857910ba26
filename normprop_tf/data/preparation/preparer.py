"""Prepares CIFAR-10, CIFAR-100 or SVHN as TFRecords plus input statistics.

`prepare(...)` writes into `data_dir`:
- `<split>-00000-of-000NN.tfrecord` for train, validation and test (raw
  uint8 pixels + int64 label; schema in `normprop_tf.data.schema`);
- `stats.npz`: per-dimension mean/std and GCN + ZCA statistics of the
  training split (`normprop_tf.data.stats`);
- `stats.json`, last: counts, parameters, shard digests and fingerprint, the
  arguments of this run. Its presence marks a complete preparation.

A second run with the same arguments and source only verifies the output
and rewrites nothing. Every file is written under a temporary name and
renamed; an interrupted run leaves no stats.json, so it never looks done.
The command line is `python -m data_prep.prepare` (a thin CLI over this).
"""

import datetime
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from normprop_tf.data import errors
from normprop_tf.data import manifest
from normprop_tf.data import schema
from normprop_tf.data import stats as stats_lib
from normprop_tf.data.preparation import counts
from normprop_tf.data.preparation import options as options_lib
from normprop_tf.data.preparation import sources
from normprop_tf.data.preparation import splits as splits_lib
from normprop_tf.data.preparation import writer
from normprop_tf.utils import fileio
from normprop_tf.utils import locking

DataError = errors.DataError


def _existing(data_dir):
  try:
    return manifest.load_manifest(data_dir)
  except DataError:
    return None


def _clear(data_dir):
  """Removes a previous preparation: the completion marker first."""
  for name in (manifest.STATS_JSON, manifest.STATS_NPZ):
    path = os.path.join(data_dir, name)
    if tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)
  for name in tf.io.gfile.listdir(data_dir):
    base = name.split(writer.TMP_MARKER)[0]
    if schema.parse_shard_filename(base) or writer.is_temporary(name):
      tf.io.gfile.remove(os.path.join(data_dir, name))


def _summary(info, data_dir, skipped, seconds):
  return {
      'data_dir': data_dir,
      'dataset': info['dataset'],
      'skipped': skipped,
      'seconds': round(seconds, 2),
      'fingerprint': info['fingerprint'],
      'splits': {s: {'num_examples': v['num_examples'],
                     'num_shards': len(v['shards'])}
                 for s, v in info['splits'].items()},
  }


def _reusable(data_dir, args, overwrite):
  """The existing manifest if it is complete and made with `args`, else None.

  Raises:
    DataError: a complete preparation with other arguments exists and
      `overwrite` is False.
  """
  existing = _existing(data_dir)
  if existing is None:
    return None
  old = existing.get('prepare_args', {})
  if not options_lib.differences(old, args):
    try:
      for split in existing['splits']:
        manifest.verify_split(data_dir, existing, split, 'full')
      stats_lib.load_stats(data_dir)
      return existing
    except DataError as e:
      logging.warning('Existing output is damaged, re-creating it: %s', e)
      return None
  if not overwrite:
    raise DataError(
        f'{data_dir} already holds a complete {existing.get("dataset")} '
        f'preparation made with other arguments '
        f'({options_lib.differences(old, args)}). '
        'Pass --overwrite to replace it, or choose another --data_dir.')
  return None


def _write_splits(data_dir, raw, parts, spec, num_shards, seed):
  """Writes every split's shards; returns (split info, train images)."""
  bytes_per_example = int(np.prod(spec['image_shape'])) + 20
  num_train = sum(len(i) if i is not None else len(raw.splits[s][1])
                  for s, i in parts['train'])
  train_shards = int(num_shards) or writer.auto_num_shards(
      num_train, bytes_per_example)
  split_info, train_images = {}, None
  for split in ('train', 'validation', 'test'):
    if split not in parts:
      continue
    images, labels = splits_lib.assemble(raw.splits, parts[split], seed, split)
    shards = train_shards if split == 'train' else max(
        1, round(train_shards * len(labels) / num_train))
    entries = writer.write_split(data_dir, split, images, labels,
                                 min(shards, len(labels)))
    split_info[split] = {
        'num_examples': int(len(labels)),
        'class_counts': np.bincount(labels, minlength=spec['num_classes'])
                        .tolist(),
        'shards': entries,
    }
    if split == 'train':
      train_images = images
  return split_info, train_images


def _write_statistics(data_dir, train_images, compute_zca, zca_epsilon,
                      fingerprint):
  start = time.monotonic()
  logging.info('Computing statistics on %d training images (ZCA: %s)',
               len(train_images), compute_zca)
  arrays, params = stats_lib.compute_stats(train_images, compute_zca,
                                           zca_epsilon)
  params['seconds'] = round(time.monotonic() - start, 1)
  logging.info('Statistics done in %.1f s', params['seconds'])
  params['npz_sha256'] = stats_lib.save_npz(
      os.path.join(data_dir, manifest.STATS_NPZ), arrays, fingerprint)
  return params


def prepare(dataset, data_dir, source='tfds', overwrite=False, **options):
  """Prepares `dataset` in `data_dir` (see the module docstring).

  Args:
    dataset: 'cifar10', 'cifar100' or 'svhn'.
    data_dir: output directory (created if missing).
    source: 'tfds', a folder of class subfolders, a .tar.gz of one, or the
      original cifar-10-python.tar.gz / cifar-100-python.tar.gz.
    overwrite: replace a complete preparation made with other arguments.
    **options: the fields of `options.PrepareOptions`: num_shards,
      validation_size, seed, svhn_use_extra, tfds_data_dir, compute_zca,
      zca_epsilon, subset_per_class, jpeg_idct.

  Returns:
    A summary dict: data_dir, dataset, skipped (True when the existing
    output was already complete and identical), seconds, fingerprint and
    per-split num_examples and num_shards.

  Raises:
    DataError: with a message naming the bad file or value and the fix.
  """
  start = time.monotonic()
  dataset = errors.check_dataset_name(dataset)
  opts = options_lib.make(**options)
  if source != 'tfds':
    source = os.path.abspath(os.path.expanduser(str(source)))
  args = options_lib.arguments_record(dataset, source, opts)
  try:
    tf.io.gfile.makedirs(data_dir)
  except (tf.errors.OpError, OSError) as e:
    raise DataError(f'Cannot create the data directory {data_dir} '
                    f'({getattr(e, "message", e)}). Choose a writable '
                    '--data_dir (gin: dataset.data_dir).') from None
  with locking.DirectoryLock(data_dir, f'preparing {dataset}', wait=True):
    return _prepare_locked(dataset, data_dir, source, overwrite, opts, args,
                           start)


def _prepare_locked(dataset, data_dir, source, overwrite, opts, args, start):
  """`prepare` while holding the data_dir's lock."""
  spec = errors.DATASETS[dataset]
  existing = _reusable(data_dir, args, overwrite)
  if existing is not None:
    logging.info('%s is already prepared with these arguments; nothing to '
                 'do.', data_dir)
    return _summary(existing, data_dir, True, time.monotonic() - start)
  try:
    _clear(data_dir)
  except (tf.errors.OpError, OSError) as e:
    raise DataError(f'Cannot write to the data directory {data_dir} '
                    f'({getattr(e, "message", e)}). Choose a writable '
                    '--data_dir (gin: dataset.data_dir).') from None
  logging.info('Loading %s from %s', dataset, source)
  raw = sources.load_source(dataset, source, opts)
  if source != 'tfds':  # TFDS checks its downloads and split sizes itself.
    counts.check_counts(dataset, raw.splits,
                        options_lib.subset_limits(opts.subset_per_class),
                        source)
  parts = splits_lib.split_parts(dataset, raw.splits, opts.validation_size,
                                 opts.seed)
  split_info, train_images = _write_splits(data_dir, raw, parts, spec,
                                           opts.num_shards, opts.seed)
  class_names = list(raw.class_names)
  del raw
  fingerprint = manifest.fingerprint(
      {s: v['shards'] for s, v in split_info.items()})
  params = _write_statistics(data_dir, train_images, opts.compute_zca,
                             opts.zca_epsilon, fingerprint)
  info = {
      'format_version': schema.FORMAT_VERSION,
      'dataset': dataset,
      'image_shape': list(spec['image_shape']),
      'num_classes': spec['num_classes'],
      'class_names': class_names,
      'splits': split_info,
      'fingerprint': fingerprint,
      'stats': params,
      'prepare_args': args,
      'created_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'prepare_seconds': round(time.monotonic() - start, 1),
      'versions': {'tensorflow': tf.__version__, 'numpy': np.__version__},
  }
  info[manifest.STATS_NPZ_SHA256] = params.pop('npz_sha256')
  info[manifest.CONTENT_SHA256] = manifest.content_sha256(info)
  fileio.write_json(os.path.join(data_dir, manifest.STATS_JSON), info,
                    sort_keys=False)
  return _summary(info, data_dir, False, time.monotonic() - start)
