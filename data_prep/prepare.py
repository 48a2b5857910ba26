r"""Prepares CIFAR-10, CIFAR-100 or SVHN as TFRecords plus input statistics.

    python -m data_prep.prepare --dataset=cifar10 --data_dir=/tmp/np_data \
        --source=../shared/data/cifar10-jpg.tar.gz

Writes into --data_dir:
- `<split>-00000-of-000NN.tfrecord` for train, validation and test (raw
  uint8 pixels + int64 label; schema in normprop_tf/data/schema.py);
- `stats.npz`: per-dimension mean/std and GCN + ZCA statistics of the
  training split (normprop_tf/data/stats.py);
- `stats.json`, last: counts, parameters, shard digests and fingerprint, the
  arguments of this run. Its presence marks a complete preparation.

A second run with the same arguments and source only verifies the output
and rewrites nothing. Every file is written under a temporary name and
renamed; an interrupted run leaves no stats.json, so it never looks done.
The library entry point is `prepare(...)`; `main` only parses flags.
"""

import datetime
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from data_prep import sources
from data_prep import splits as splits_lib
from data_prep import writer
from normprop_tf.data import errors
from normprop_tf.data import manifest
from normprop_tf.data import schema
from normprop_tf.data import stats as stats_lib

DataError = errors.DataError


def _args_record(dataset, source, num_shards, validation_size, seed,
                 svhn_use_extra, tfds_data_dir, compute_zca):
  """What identifies a preparation; equal records mean nothing to redo."""
  record = {
      'format_version': schema.FORMAT_VERSION,
      'dataset': dataset,
      'source': source,
      'source_fingerprint': sources.source_fingerprint(source, dataset,
                                                       tfds_data_dir),
      'num_shards': int(num_shards),
      'seed': int(seed),
      'compute_zca': bool(compute_zca),
  }
  if dataset == 'svhn':
    record['svhn_use_extra'] = bool(svhn_use_extra)
  else:
    record['validation_size'] = int(validation_size)
  return record


def _same(a, b):
  """Equal records, ignoring where the source lies (its content counts)."""
  strip = lambda r: {k: v for k, v in r.items() if k != 'source'}
  return strip(a) == strip(b)


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
    parsed = schema.parse_shard_filename(name.removesuffix(writer.TMP_SUFFIX))
    if parsed or name.endswith(writer.TMP_SUFFIX):
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


def prepare(dataset, data_dir, source='tfds', num_shards=0,
            validation_size=5000, seed=0, svhn_use_extra=True,
            tfds_data_dir=None, compute_zca=True, overwrite=False):
  """Prepares `dataset` in `data_dir` (see the module docstring).

  Args:
    dataset: 'cifar10', 'cifar100' or 'svhn'.
    data_dir: output directory (created if missing).
    source: 'tfds', a folder of class subfolders, a .tar.gz of one, or the
      original cifar-10-python.tar.gz / cifar-100-python.tar.gz.
    num_shards: shards of the train split; 0 picks about 10 MB per shard.
      Other splits get shards in proportion (at least 1).
    validation_size: CIFAR: examples held out of train (0: none).
    seed: seeds the validation holdout and the order of examples.
    svhn_use_extra: SVHN: add the extra split (531,131 images) to train and
      draw 200 validation images per class from it.
    tfds_data_dir: TFDS data dir (default: TFDS's own default).
    compute_zca: also compute the GCN + ZCA statistics (a 3072x3072
      eigendecomposition).
    overwrite: replace a complete preparation made with other arguments.

  Returns:
    A summary dict: data_dir, dataset, skipped (True when the existing
    output was already complete and identical), seconds, fingerprint and
    per-split num_examples and num_shards.

  Raises:
    DataError: with a message naming the bad file or value and the fix.
  """
  start = time.monotonic()
  dataset = errors.check_dataset_name(dataset)
  spec = errors.DATASETS[dataset]
  if source != 'tfds':
    source = os.path.abspath(os.path.expanduser(str(source)))
  if isinstance(num_shards, bool) or int(num_shards) < 0:
    raise DataError(f'--num_shards={num_shards} must be >= 0 (0: automatic).')
  args = _args_record(dataset, source, num_shards, validation_size, seed,
                      svhn_use_extra, tfds_data_dir, compute_zca)

  tf.io.gfile.makedirs(data_dir)
  existing = _existing(data_dir)
  if existing is not None and _same(existing.get('prepare_args', {}), args):
    try:
      for split in existing['splits']:
        manifest.verify_split(data_dir, existing, split, 'full')
      stats_lib.load_stats(data_dir)
      logging.info('%s is already prepared with these arguments; nothing to '
                   'do.', data_dir)
      return _summary(existing, data_dir, True, time.monotonic() - start)
    except DataError as e:
      logging.warning('Existing output is damaged, re-creating it: %s', e)
  elif existing is not None and not overwrite:
    old = existing.get('prepare_args', {})
    diff = ', '.join(f'{k}: {old.get(k)!r} -> {v!r}' for k, v in args.items()
                     if old.get(k) != v and k != 'source')
    raise DataError(
        f'{data_dir} already holds a complete {existing.get("dataset")} '
        f'preparation made with other arguments ({diff}). Pass --overwrite '
        'to replace it, or choose another --data_dir.')
  _clear(data_dir)

  logging.info('Loading %s from %s', dataset, source)
  raw = sources.load_source(dataset, source, tfds_data_dir, svhn_use_extra)
  if dataset == 'svhn':
    parts = splits_lib.svhn_splits({k: v[1] for k, v in raw.splits.items()},
                                   seed, spec['num_classes'])
  else:
    parts = splits_lib.cifar_splits(len(raw.splits['train'][1]),
                                    int(validation_size), seed)

  bytes_per_example = int(np.prod(spec['image_shape'])) + 20
  split_info, train_images = {}, None
  num_train = sum(len(i) if i is not None else len(raw.splits[s][1])
                  for s, i in parts['train'])
  train_shards = int(num_shards) or writer.auto_num_shards(
      num_train, bytes_per_example)
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
  class_names = list(raw.class_names)
  del raw
  fingerprint = manifest.fingerprint(
      {s: v['shards'] for s, v in split_info.items()})

  t0 = time.monotonic()
  logging.info('Computing statistics on %d training images (ZCA: %s)',
               len(train_images), compute_zca)
  arrays, params = stats_lib.compute_stats(train_images, compute_zca)
  params['seconds'] = round(time.monotonic() - t0, 1)
  logging.info('Statistics done in %.1f s', params['seconds'])
  stats_lib.save_npz(os.path.join(data_dir, manifest.STATS_NPZ), arrays,
                     fingerprint)

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
  path = os.path.join(data_dir, manifest.STATS_JSON)
  with tf.io.gfile.GFile(path + writer.TMP_SUFFIX, 'w') as f:
    json.dump(info, f, indent=1)
  tf.io.gfile.rename(path + writer.TMP_SUFFIX, path, overwrite=True)
  return _summary(info, data_dir, False, time.monotonic() - start)


FLAGS = flags.FLAGS


def define_flags():
  """Defines the command-line flags (idempotent, for tests)."""
  if 'dataset' in FLAGS:
    return
  flags.DEFINE_string('dataset', None,
                      'Dataset to prepare: cifar10, cifar100 or svhn.')
  flags.DEFINE_string('data_dir', None,
                      'Output directory for the TFRecord shards and stats.')
  flags.DEFINE_string(
      'source', 'tfds',
      '"tfds" (download through TFDS; fails fast when offline), a folder of '
      'class subfolders (train/<class>/*.jpg, test/<class>/*.jpg), a '
      '.tar.gz of one, or the original cifar-10-python.tar.gz / '
      'cifar-100-python.tar.gz (pickles: use only trusted archives).')
  flags.DEFINE_integer(
      'num_shards', 0,
      'Shards of the train split (0: about 10 MB each); other splits get '
      'shards in proportion.')
  flags.DEFINE_integer(
      'validation_size', 5000,
      'CIFAR: examples held out of train as the validation split (seeded; 0: '
      'no validation split). SVHN uses 400/class of train + 200/class of '
      'extra instead.')
  flags.DEFINE_integer('seed', 0,
                       'Seed of the validation holdout and example order.')
  flags.DEFINE_bool(
      'svhn_use_extra', True,
      'SVHN: include the 531,131 "extra" images (train += extra minus 200 '
      'validation images per class). false: train only, 400/class '
      'validation.')
  flags.DEFINE_string('tfds_data_dir', None,
                      'TFDS data directory (default: TFDS default).')
  flags.DEFINE_bool('zca', True,
                    'Also compute GCN + ZCA statistics (needed for '
                    "preprocessing='zca').")
  flags.DEFINE_bool(
      'overwrite', False,
      'Replace a complete preparation in --data_dir that was made with '
      'other arguments.')
  flags.mark_flags_as_required(['dataset', 'data_dir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    summary = prepare(
        FLAGS.dataset, FLAGS.data_dir, source=FLAGS.source,
        num_shards=FLAGS.num_shards, validation_size=FLAGS.validation_size,
        seed=FLAGS.seed, svhn_use_extra=FLAGS.svhn_use_extra,
        tfds_data_dir=FLAGS.tfds_data_dir, compute_zca=FLAGS.zca,
        overwrite=FLAGS.overwrite)
  except DataError as e:
    print(f'data_prep.prepare: error: {e}', file=sys.stderr)
    sys.exit(1)
  state = 'already prepared, nothing rewritten' if summary['skipped'] else (
      'prepared')
  print(f'{summary["dataset"]} {state} in {summary["seconds"]:.1f} s: '
        f'{summary["data_dir"]}')
  for split, v in summary['splits'].items():
    print(f'  {split:<10} {v["num_examples"]:>7} examples  '
          f'{v["num_shards"]:>3} shards')
  print(f'  fingerprint {summary["fingerprint"][:16]}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
