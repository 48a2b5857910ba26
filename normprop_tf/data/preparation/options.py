"""The options of a preparation, and the record that identifies one.

`PrepareOptions` holds every argument of a preparation but the dataset, the
output directory and the source. `arguments_record` turns them, with the
source's content fingerprint, into the `prepare_args` stored in stats.json:
a data_dir is reused only when its record equals the requested one.

TensorFlow-free: the Keras-only runner (`normprop_tf.fit`) prepares its
NumPy arrays with the same options and the same record.
"""

import dataclasses
import hashlib
import os
from typing import Optional

from normprop_tf.data import spec
from normprop_tf.data.errors import DataError
from normprop_tf.data.preparation import class_folders
from normprop_tf.utils import checks

ZCA_EPSILON = 0.1
TFDS_NAMES = {'cifar10': 'cifar10', 'cifar100': 'cifar100',
              'svhn': 'svhn_cropped'}


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """How a dataset is prepared (see `preparer.prepare`).

  Attributes:
    num_shards: shards of the train split; 0 picks about 10 MB per shard.
    validation_size: CIFAR: examples held out of train (0: none).
    seed: seeds the validation holdout and the order of examples.
    svhn_use_extra: SVHN: add the extra split to train and draw 200
      validation images per class from it.
    tfds_data_dir: TFDS data dir (default: TFDS's own default).
    compute_zca: also compute the GCN + ZCA statistics.
    zca_epsilon: added to the covariance's eigenvalues by ZCA (pylearn2's
      0.1; 1e-5 whitens almost exactly).
    subset_per_class: None (everything), an int N or {split: N}: only the
      first N images of every class (by file name).
    jpeg_idct: how JPEGs are decoded: 'accurate' (libjpeg's exact integer
      IDCT, as Pillow and most readers decode) or 'tf_default' (TensorFlow's
      unspecified default, a fast IDCT on x86 builds, up to 5 levels off;
      the reduced-scale records were prepared so).
  """
  num_shards: int = 0
  validation_size: int = 5000
  seed: int = 0
  svhn_use_extra: bool = True
  tfds_data_dir: Optional[str] = None
  compute_zca: bool = True
  zca_epsilon: float = ZCA_EPSILON
  subset_per_class: Optional[object] = None
  jpeg_idct: str = 'accurate'

  def __post_init__(self):
    if not checks.is_integer(self.num_shards) or self.num_shards < 0:
      raise DataError(f'--num_shards={self.num_shards} must be >= 0 (0: '
                      'automatic).')
    checks.non_negative_int('validation_size', self.validation_size)
    checks.non_negative_int('seed', self.seed)
    checks.positive_number('zca_epsilon', self.zca_epsilon)
    checks.one_of('jpeg_idct', self.jpeg_idct, spec.JPEG_IDCT)
    subset_limits(self.subset_per_class)  # Raises on a bad value.


def subset_limits(subset_per_class):
  """{split: N} from None, an int (every split) or a {split: N} dict."""
  if subset_per_class is None:
    return None
  if checks.is_integer(subset_per_class) and subset_per_class > 0:
    return {split: int(subset_per_class) for split in class_folders.SPLITS}
  if isinstance(subset_per_class, dict) and all(
      checks.is_integer(v) and v > 0 for v in subset_per_class.values()):
    return {str(k): int(v) for k, v in subset_per_class.items()}
  raise DataError(
      'subset_per_class must be None, a positive int or {split: int}. '
      f'Received: subset_per_class={subset_per_class!r}')


def source_fingerprint(source, dataset, tfds_data_dir=None):
  """A cheap string that changes when the source's content changes."""
  if source == 'tfds':
    return f'tfds:{TFDS_NAMES[dataset]}:{tfds_data_dir or "default"}'
  if os.path.isdir(source):
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(source):
      dirs.sort()
      for name in sorted(files):
        path = os.path.join(root, name)
        st = os.stat(path)
        digest.update(f'{os.path.relpath(path, source)}\0{st.st_size}\0'
                      f'{st.st_mtime_ns}\n'.encode())
    return 'folder:' + digest.hexdigest()
  if os.path.isfile(source):
    digest = hashlib.sha256()
    with open(source, 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 22), b''):
        digest.update(chunk)
    return 'file:' + digest.hexdigest()
  raise DataError(
      f'--source={source} does not exist. Give a folder of class subfolders, '
      'a .tar.gz of one, cifar-10-python.tar.gz / cifar-100-python.tar.gz, '
      'or "tfds".')


def arguments_record(dataset, source, options):
  """What identifies a preparation; equal records mean nothing to redo.

  Options added after the first release are recorded only when they differ
  from what preparations made before them did, so those stay reusable.
  """
  record = {
      'format_version': spec.FORMAT_VERSION,
      'dataset': dataset,
      'source': source,
      'source_fingerprint': source_fingerprint(source, dataset,
                                               options.tfds_data_dir),
      'num_shards': int(options.num_shards),
      'seed': int(options.seed),
      'compute_zca': bool(options.compute_zca),
  }
  if options.subset_per_class is not None:
    record['subset_per_class'] = subset_limits(options.subset_per_class)
  if options.compute_zca and options.zca_epsilon != ZCA_EPSILON:
    record['zca_epsilon'] = float(options.zca_epsilon)
  if options.jpeg_idct != 'tf_default':
    record['jpeg_idct'] = options.jpeg_idct
  if dataset == 'svhn':
    record['svhn_use_extra'] = bool(options.svhn_use_extra)
  else:
    record['validation_size'] = int(options.validation_size)
  return record


def differences(old, new):
  """'key: old -> new' for every argument that differs (not the path)."""
  return ', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}'
                   for k in sorted(old.keys() | new.keys())
                   if k != 'source' and old.get(k) != new.get(k))


def make(**options):
  """`PrepareOptions(**options)`, with unknown names a `DataError`."""
  try:
    return PrepareOptions(**options)
  except TypeError as e:
    raise DataError(f'Unknown preparation option ({e}). Known: '
                    f'{", ".join(f.name for f in dataclasses.fields(PrepareOptions))}'
                    ) from None
