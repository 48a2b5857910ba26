"""Makes sure a prepared data_dir exists before training: `ensure_prepared`.

When `<data_dir>/stats.json` is missing and a source is configured, the
records are prepared with `data_prep.prepare` (the same code as `python -m
data_prep.prepare`). Without a source, the "not prepared" error names the
exact command to run.

A source can be cut to the first N images per class of each split
(`subset_per_class`), which is how `gin/smoke.gin` prepares its small
subset of the real CIFAR-10 copy in a few seconds. Files are taken in
sorted-name order, so the subset is deterministic.
"""

import os
import shutil
import tarfile
import tempfile
import time

from absl import logging
import tensorflow as tf

from normprop_tf.data import errors as data_errors
from normprop_tf.data import manifest

_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
_SPLITS = ('train', 'test', 'extra')


def ensure_prepared(dataset, data_dir, source=None, subset_per_class=None,
                    validation_size=5000, compute_zca=True, seed=0,
                    is_chief=True, wait_seconds=3600):
  """Returns the manifest of `data_dir`, preparing it first when needed.

  Args:
    dataset: 'cifar10', 'cifar100' or 'svhn'.
    data_dir: the prepared directory (local or gs://).
    source: None (never prepare), 'tfds', a folder of class subfolders, a
      .tar.gz of one, or an original CIFAR python archive.
    subset_per_class: None (whole source), an int (the first N images of
      every class of every split), or a dict {split: N}. Folder and tar
      sources only.
    validation_size: CIFAR validation holdout (`data_prep.prepare`).
    compute_zca: also compute the ZCA statistics (a 3072x3072
      eigendecomposition, several seconds).
    seed: seeds the validation holdout and the record order.
    is_chief: only the chief prepares; other workers wait for stats.json.
    wait_seconds: how long a non-chief waits.

  Raises:
    DataError: not prepared and no source (the message gives the prepare
      command), or the preparation failed (the message says why).
  """
  try:
    return manifest.load_manifest(data_dir, dataset)
  except data_errors.DataError as e:
    if source is None:
      raise data_errors.DataError(
          f'{e} Or let training prepare it: set run.data_source (gin) to '
          'one of those sources.') from None
    missing_error = e
  if not is_chief:
    return _wait_for(dataset, data_dir, wait_seconds, missing_error)

  # Imported here: data_prep is only needed when something must be prepared.
  from data_prep import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  command = data_errors.prepare_command(data_dir, dataset, source)
  logging.info('No prepared %s in %s; preparing it from %s (the same as: %s)',
               dataset, data_dir, source, command)
  tmp = None
  try:
    if subset_per_class is not None:
      tmp = tempfile.mkdtemp(prefix=f'normprop_{dataset}_subset_')
      source = extract_subset(source, tmp, subset_per_class)
    prepare_lib.prepare(dataset, data_dir, source=source,
                        validation_size=validation_size, seed=seed,
                        compute_zca=compute_zca)
  except data_errors.DataError as e:
    raise data_errors.DataError(
        f'Preparing {dataset} in {data_dir} from {source!r} failed: {e}\n'
        f'Prepare it yourself with: {command}') from None
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)
  return manifest.load_manifest(data_dir, dataset)


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


def _split_class_file(relpath):
  """(split, class, name) of '[top/]split/class/file', else None."""
  parts = relpath.strip('/').split('/')
  if parts and parts[0] == '.':
    parts = parts[1:]
  if len(parts) == 4 and parts[1] in _SPLITS:
    parts = parts[1:]
  if len(parts) != 3 or parts[0] not in _SPLITS:
    return None
  if parts[2].startswith('.') or not parts[2].lower().endswith(
      _IMAGE_EXTENSIONS):
    return None
  return tuple(parts)


def extract_subset(source, out_dir, per_class):
  """Copies the first N images per class and split of `source` to `out_dir`.

  Args:
    source: a folder of `split/class/image` files or a tar(.gz) of one
      (optionally under one top-level directory).
    out_dir: destination folder; gets `split/class/image` files.
    per_class: int, or {split: int}; splits absent from a dict are skipped.

  Returns:
    `out_dir`, ready to be a `data_prep.prepare` source.

  Raises:
    DataError: the source does not exist or holds no class folders.
  """
  if isinstance(per_class, int):
    limits = {split: per_class for split in _SPLITS}
  else:
    limits = {str(k): int(v) for k, v in dict(per_class).items()}
  source = os.path.expanduser(str(source))
  chosen = {}
  if os.path.isdir(source):
    for root, _, files in os.walk(source):
      for name in files:
        path = os.path.join(root, name)
        key = _split_class_file(os.path.relpath(path, source))
        if key and key[0] in limits:
          chosen.setdefault(key[:2], []).append((key[2], path))
    _copy_first(chosen, limits, out_dir, read=lambda p: open(p, 'rb').read())
  elif os.path.isfile(source):
    try:
      with tarfile.open(source, 'r:*') as tar:
        for member in tar.getmembers():
          key = _split_class_file(member.name) if member.isfile() else None
          if key and key[0] in limits:
            chosen.setdefault(key[:2], []).append((key[2], member))
        _copy_first(chosen, limits, out_dir,
                    read=lambda m: tar.extractfile(m).read())
    except (tarfile.TarError, OSError, EOFError) as e:
      raise data_errors.DataError(
          f'Cannot read {source} as a tar archive of class folders ({e}).'
      ) from None
  else:
    raise data_errors.DataError(
        f'The data source {source} does not exist. Point run.data_source at '
        'a folder of class subfolders or a .tar.gz of one (e.g. '
        '../shared/data/cifar10-jpg.tar.gz).')
  if not chosen:
    raise data_errors.DataError(
        f'{source} holds no split/class/image files (expected e.g. '
        'train/airplane/0000.jpg).')
  return out_dir


def _copy_first(chosen, limits, out_dir, read):
  for (split, cls), items in sorted(chosen.items()):
    folder = os.path.join(out_dir, split, cls)
    os.makedirs(folder, exist_ok=True)
    for name, handle in sorted(items, key=lambda item: item[0])[
        :limits[split]]:
      with open(os.path.join(folder, name), 'wb') as f:
        f.write(read(handle))


def records_exist(data_dir):
  """Whether `data_dir` holds a completed preparation (stats.json)."""
  return tf.io.gfile.exists(os.path.join(data_dir, manifest.STATS_JSON))
