"""The one exception type of the data package, and the fix-it command text.

Every data problem a user can cause (a missing or corrupt shard, statistics
that do not match the shards, a malformed source, a wrong image shape, an
out-of-range label, an unknown dataset, TFDS being unreachable) raises
`DataError`. Its message names the offending file or value and says how to
fix it. `DataError` subclasses `ValueError`, so callers that already catch
`ValueError` keep working.
"""

import os
import shlex

from normprop_tf.data import spec

DATASETS = spec.DATASETS


class DataError(ValueError):
  """Bad or missing data. The message says which file or value, and the fix."""


def check_dataset_name(dataset):
  """Returns `dataset` lower-cased, or raises DataError listing the choices."""
  name = str(dataset).strip().lower()
  if name not in DATASETS:
    raise DataError(
        f'Unknown dataset {dataset!r}. Choose one of: '
        f'{", ".join(sorted(DATASETS))} (e.g. --dataset=cifar10).')
  return name


def prepare_command(data_dir, dataset=None, source=None):
  """The exact `python -m data_prep.prepare ...` command that fills `data_dir`.

  Args:
    data_dir: the directory that should hold the prepared records.
    dataset: dataset name. When None it is guessed from the basename of
      `data_dir`, and otherwise written as the placeholder `DATASET`.
    source: optional `--source` value; omitted (the TFDS default) when None.
  """
  if dataset is None:
    base = os.path.basename(os.path.normpath(str(data_dir))).lower()
    dataset = base if base in DATASETS else 'DATASET'
  parts = ['python -m data_prep.prepare', f'--dataset={dataset}']
  if source is not None:
    parts.append(f'--source={shlex.quote(str(source))}')
  parts.append(f'--data_dir={shlex.quote(str(data_dir))}')
  return ' '.join(parts)


def not_prepared_hint(data_dir, dataset=None):
  """The sentence appended to every "dataset not prepared" error."""
  hint = f'Run: {prepare_command(data_dir, dataset)}'
  if dataset is None and 'DATASET' in hint:
    hint += f' (DATASET is one of {", ".join(sorted(DATASETS))})'
  return (hint + '. Offline, add --source=PATH with a local copy: a folder '
          'of class subfolders, a .tar.gz of one (e.g. '
          'cifar10-jpg.tar.gz), or the original '
          'cifar-10-python.tar.gz / cifar-100-python.tar.gz.')
