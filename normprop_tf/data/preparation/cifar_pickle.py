"""The original CIFAR python archives, unpickled safely.

`cifar-10-python.tar.gz` and `cifar-100-python.tar.gz` hold pickled dicts of
uint8 rows. A plain `pickle.load` would run any code a crafted archive
carries (a `__reduce__` payload), so the unpickler here admits only what a
CIFAR batch holds: dicts, lists, str, bytes, numbers and NumPy arrays of
numbers. Anything else is a `DataError` naming the file and the type.
"""

import io
import pickle

import numpy as np

from normprop_tf.data.errors import DataError

PICKLE_ROOTS = {'cifar-10-batches-py': 'cifar10',
                'cifar-100-python': 'cifar100'}
# The globals NumPy arrays need to be rebuilt, and nothing else.
_ALLOWED_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
}
_NUMERIC_KINDS = 'biuf'


class _SafeUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) in _ALLOWED_GLOBALS:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(
        f'refused to load {module}.{name}: a CIFAR batch holds only dicts, '
        'lists, strings, bytes, numbers and NumPy arrays')


def _check_types(obj, depth=0):
  """Raises UnpicklingError for anything but plain data of numbers."""
  if depth > 4:
    raise pickle.UnpicklingError('nesting deeper than a CIFAR batch')
  if isinstance(obj, dict):
    for k, v in obj.items():
      _check_types(k, depth + 1)
      _check_types(v, depth + 1)
  elif isinstance(obj, (list, tuple)):
    for v in obj:
      _check_types(v, depth + 1)
  elif isinstance(obj, np.ndarray):
    if obj.dtype.kind not in _NUMERIC_KINDS:
      raise pickle.UnpicklingError(f'a NumPy array of dtype {obj.dtype}')
  elif not isinstance(obj, (str, bytes, int, float, bool, type(None))):
    raise pickle.UnpicklingError(f'an object of type {type(obj).__name__}')


def safe_load(data, where):
  """Unpickles `data` (bytes) with the restricted unpickler.

  Raises:
    DataError: the pickle needs a type a CIFAR batch does not hold, or it
      is corrupt.
  """
  try:
    obj = _SafeUnpickler(io.BytesIO(data), encoding='bytes').load()
    _check_types(obj)
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
          AttributeError, IndexError, KeyError, MemoryError) as e:
    raise DataError(
        f'{where} is not a CIFAR python batch ({e}). Only the original '
        'cifar-10-python.tar.gz / cifar-100-python.tar.gz archives are read '
        'as pickles; download the archive again.') from None
  if not isinstance(obj, dict):
    raise DataError(f'{where} holds a {type(obj).__name__}, not the dict of '
                    'a CIFAR python batch. Download the archive again.')
  return obj


def load(dataset, members, root, source):
  """({split: (uint8 images, int64 labels)}, class names) of an archive."""
  found = PICKLE_ROOTS[root]
  if found != dataset:
    raise DataError(
        f'--source={source} is the {found} archive, but --dataset={dataset}. '
        f'Use --dataset={found} or the {dataset} archive.')
  if found == 'cifar10':
    parts = {'train': [f'{root}/data_batch_{i}' for i in range(1, 6)],
             'test': [f'{root}/test_batch']}
    meta, key, names_key = f'{root}/batches.meta', b'labels', b'label_names'
  else:
    parts = {'train': [f'{root}/train'], 'test': [f'{root}/test']}
    meta, key, names_key = f'{root}/meta', b'fine_labels', b'fine_label_names'
  out = {split: _load_split(members, batches, key, source)
         for split, batches in parts.items()}
  class_names = [str(i) for i in range(10 if found == 'cifar10' else 100)]
  if meta in members:
    names = safe_load(members[meta], f'{source}: {meta}').get(names_key)
    if isinstance(names, list) and all(isinstance(n, bytes) for n in names):
      class_names = [n.decode() for n in names]
  return out, class_names


def _load_split(members, batches, key, source):
  images, labels = [], []
  for name in batches:
    if name not in members:
      raise DataError(f'{source} lacks {name}: the archive is incomplete. '
                      'Download it again.')
    batch = safe_load(members[name], f'{source}: {name}')
    try:
      data = np.asarray(batch[b'data'], np.uint8)
      batch_labels = np.asarray(batch[key], np.int64)
    except (KeyError, ValueError, TypeError) as e:
      raise DataError(f'{source}: {name} is corrupt ({e!r}). Download the '
                      'archive again.') from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(
        batch_labels):
      raise DataError(
          f'{source}: {name} holds data of shape {data.shape} and '
          f'{len(batch_labels)} labels; expected [N, 3072] (32x32x3, '
          'channel-major) and N labels.')
    images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    labels.append(batch_labels)
  return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)
