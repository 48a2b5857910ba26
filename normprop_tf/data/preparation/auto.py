"""Makes sure a prepared data_dir exists before training: `ensure_prepared`.

When `<data_dir>/stats.json` is missing and a source is configured, the
records are prepared with `prepare.prepare` (the same code as `python -m
data_prep.prepare`). Without a source, the "not prepared" error names the
exact command to run.

A source can be cut to the first N images per class of each split
(`subset_per_class`), which is how `gin/smoke.gin` prepares a small subset
of CIFAR-10 in a few seconds. Files are taken in sorted-name order, so the
subset is deterministic.
"""

import os
import time

from absl import logging

from normprop_tf.data import errors as data_errors
from normprop_tf.data import manifest
from normprop_tf.data.preparation import options as options_lib
from normprop_tf.data.preparation import preparer as prepare_lib


def ensure_prepared(dataset, data_dir, source=None, is_chief=True,
                    wait_seconds=3600, **options):
  """Returns the manifest of `data_dir`, preparing it first when needed.

  Args:
    dataset: 'cifar10', 'cifar100' or 'svhn'.
    data_dir: the prepared directory (local or gs://).
    source: None (never prepare), 'tfds', a folder of class subfolders, a
      .tar.gz of one, or an original CIFAR python archive.
    is_chief: only the chief prepares; other workers wait for stats.json.
    wait_seconds: how long a non-chief waits.
    **options: `options.PrepareOptions` fields (subset_per_class,
      validation_size, compute_zca, zca_epsilon, jpeg_idct, seed, ...).

  Raises:
    DataError: not prepared and no source (the message gives the prepare
      command), prepared with other arguments, or the preparation failed
      (the message says why).
  """
  opts = options_lib.make(**options)
  try:
    info = manifest.load_manifest(data_dir, dataset)
  except data_errors.DataError as e:
    if source is None:
      raise data_errors.DataError(
          f'{e} Or let training prepare it: bind dataset.source (gin) to '
          'one of those sources.') from None
    missing_error = e
  else:
    check_same_preparation(info, data_dir, source, opts)
    return info
  if not is_chief:
    return _wait_for(dataset, data_dir, wait_seconds, missing_error)
  command = data_errors.prepare_command(data_dir, dataset, source)
  logging.info('No prepared %s in %s; preparing it from %s (the same as: %s)',
               dataset, data_dir, source, command)
  try:  # Waits if another process prepares it, then reuses its result.
    prepare_lib.prepare(dataset, data_dir, source=source, **options)
  except data_errors.DataError as e:
    raise data_errors.DataError(
        f'Preparing {dataset} in {data_dir} from {source!r} failed: {e}\n'
        f'Prepare it yourself with: {command}') from None
  return manifest.load_manifest(data_dir, dataset)


# What decides a preparation's content; the shard count only changes the
# order of the records (and the run's data fingerprint, which the run
# checks itself), and a ZCA-free run can use statistics with ZCA.
_COMPARED = ('format_version', 'dataset', 'source_fingerprint', 'seed',
             'subset_per_class', 'validation_size', 'svhn_use_extra',
             'zca_epsilon', 'jpeg_idct')


def check_same_preparation(info, data_dir, source, options):
  """Raises DataError if `data_dir` was prepared with other arguments.

  Args:
    info: the data_dir's manifest.
    data_dir: the prepared directory.
    source: the source the run names (None: any; then the source's content
      is not compared).
    options: the run's `PrepareOptions`.
  """
  old = info.get('prepare_args', {})
  dataset = info.get('dataset')
  if source not in (None, 'tfds'):
    source = os.path.abspath(os.path.expanduser(str(source)))
  keys = [k for k in _COMPARED if source is not None or
          k != 'source_fingerprint']
  new = options_lib.arguments_record(dataset, source or 'tfds', options)
  diff = [f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in keys
          if old.get(k) != new.get(k)]
  if options.compute_zca and not old.get('compute_zca', True):
    diff.append('compute_zca: False -> True')
  if diff:
    raise data_errors.DataError(
        f'{data_dir} was prepared with other arguments than this run asks '
        f'for ({"; ".join(diff)}). Point dataset.data_dir at another '
        'directory, or re-prepare this one with data_prep.prepare '
        '--overwrite.')


def _wait_for(dataset, data_dir, wait_seconds, missing_error):
  deadline = time.monotonic() + wait_seconds
  while time.monotonic() < deadline:
    time.sleep(2.0)
    try:
      return manifest.load_manifest(data_dir, dataset)
    except data_errors.DataError:
      pass
  raise data_errors.DataError(
      f'Waited {wait_seconds} s for the chief to prepare {data_dir}: '
      f'{missing_error}')
