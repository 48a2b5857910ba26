"""Input statistics: computed once on the training split, stored in stats.npz.

NormProp assumes zero-mean, unit-variance inputs (docs/method.md), so the
statistics are part of the method. Two preprocessings are supported; both
treat every pixel of every channel as one dimension (3072 for CIFAR):

standardize [paper; epsilon from the authors' code]:
  x <- (x - mean) / (std + 1e-3)
  mean and std are the per-dimension training-set mean and population std.

zca [reconstructed: the pylearn2 recipe used for NIN on CIFAR]:
  g = x - mean_over_dims(x)                     # per image
  g = 55 * g / ||g||                            # GCN (||g|| < 1e-8*55: g kept)
  w = (g - zca_mean) @ P,  P = V diag(1 / sqrt(lambda + 0.1)) V^T
  x <- w / (zca_out_std + 1e-3)                 # per-dimension standardization
  lambda, V: eigenvalues/vectors of the training covariance of g. The mean
  of w over the training set is 0 by construction and zca_out_std is exact:
  Var(w_j) = sum_k V_jk^2 lambda_k / (lambda_k + 0.1).

Because 0.1 is added to the eigenvalues, w is white only in the directions
whose variance is well above 0.1: Cov(w) = V diag(lambda / (lambda + 0.1)) V^T.
GCN also removes the all-ones direction (lambda = 0 there).

Everything here is NumPy in float64; the graph-side ops are in
`preprocessing.py`.
"""

import dataclasses
import hashlib
import io
import os
import zipfile

import numpy as np

from normprop_tf.data import errors
from normprop_tf.data import manifest
from normprop_tf.utils import fileio

STD_EPSILON = 1e-3
GCN_SCALE = 55.0
GCN_MIN_DIVISOR = 1e-8
ZCA_EPSILON = 0.1
_CHUNK = 2048
# load_stats' arrays of the last local stats.npz read, by its file identity.
_CACHE = {}


def _flat64(images):
  return np.asarray(images).reshape(len(images), -1).astype(np.float64)


def mean_std(images, chunk=_CHUNK):
  """Per-dimension mean and population std (float64, two passes)."""
  n = len(images)
  if n == 0:
    raise errors.DataError('Cannot compute statistics of an empty split.')
  total = 0.0
  for i in range(0, n, chunk):
    total = total + _flat64(images[i:i + chunk]).sum(axis=0)
  mean = total / n
  sq = 0.0
  for i in range(0, n, chunk):
    sq = sq + ((_flat64(images[i:i + chunk]) - mean)**2).sum(axis=0)
  return mean, np.sqrt(sq / n)


def global_contrast_normalize(x, scale=GCN_SCALE,
                              min_divisor=GCN_MIN_DIVISOR):
  """pylearn2's GCN (subtract_mean=True, use_std=False, sqrt_bias=0).

  Args:
    x: float array [N, D].
    scale: target L2 norm of each centred row.
    min_divisor: rows whose norm/scale is below this are only centred.

  Returns:
    float64 [N, D].
  """
  x = np.asarray(x, np.float64)
  x = x - x.mean(axis=1, keepdims=True)
  divisor = np.sqrt((x**2).sum(axis=1)) / scale
  divisor[divisor < min_divisor] = 1.0
  return x / divisor[:, None]


def fit_zca(images, epsilon=ZCA_EPSILON, gcn_scale=GCN_SCALE, chunk=_CHUNK,
            method=None):
  """Fits GCN + ZCA on uint8 or float images [N, ...].

  method='covariance' eigendecomposes the D x D covariance; method='gram'
  the N x N Gram matrix, cheaper when N < D (small subsets). Both give the
  same P: the covariance's null space gets eigenvalue 0, i.e. the scale
  1/sqrt(epsilon). Default: 'covariance' when N >= D, else 'gram'.

  Returns:
    dict of float64 arrays: zca_mean [D], zca_matrix [D, D] (symmetric P),
    zca_eigenvalues [D] (descending, clipped at 0), zca_out_std [D].
  """
  n = len(images)
  d = int(np.prod(np.shape(images)[1:]))
  if n < 2:
    raise errors.DataError(f'ZCA needs at least 2 training images; got {n}.')
  if method is None:
    method = 'covariance' if n >= d else 'gram'
  if method == 'covariance':
    total, gram = np.zeros(d), np.zeros((d, d))
    for i in range(0, n, chunk):
      g = global_contrast_normalize(_flat64(images[i:i + chunk]), gcn_scale)
      total += g.sum(axis=0)
      gram += g.T @ g
    mean = total / n
    cov = gram / n - np.outer(mean, mean)
    lam, vec = np.linalg.eigh((cov + cov.T) / 2)
    lam, vec = np.clip(lam[::-1], 0, None), vec[:, ::-1]
    matrix = (vec / np.sqrt(lam + epsilon)) @ vec.T
  else:
    g = global_contrast_normalize(_flat64(images), gcn_scale)
    mean = g.mean(axis=0)
    gc = g - mean
    mu, u = np.linalg.eigh(gc @ gc.T / n)
    mu, u = mu[::-1], u[:, ::-1]
    keep = mu > mu[0] * 1e-9  # drop round-off; lambda << eps is moot
    lam = mu[keep]
    vec = gc.T @ u[:, keep] / np.sqrt(n * lam)  # orthonormal columns [D, r]
    coef = 1 / np.sqrt(lam + epsilon) - 1 / np.sqrt(epsilon)
    matrix = np.eye(d) / np.sqrt(epsilon) + (vec * coef) @ vec.T
  # Var(w_j) = sum_k V_jk^2 lambda_k / (lambda_k + eps); null space adds 0.
  out_var = (vec**2) @ (lam / (lam + epsilon))
  lam = np.concatenate([lam, np.zeros(d - len(lam))])
  return {
      'zca_mean': mean,
      'zca_matrix': matrix,
      'zca_eigenvalues': lam,
      'zca_out_std': np.sqrt(out_var),
  }


def compute_stats(images, compute_zca=True, zca_epsilon=ZCA_EPSILON):
  """All statistics of a training split of uint8 images [N, H, W, C].

  `zca_epsilon` is added to the covariance's eigenvalues (pylearn2's 0.1 by
  default; a small value such as 1e-5 whitens almost exactly).

  Returns:
    (arrays, params): a dict of float64 arrays for stats.npz, and a dict of
    JSON-able parameters for stats.json.
  """
  mean, std = mean_std(images)
  arrays = {'mean': mean, 'std': std}
  params = {
      'computed_on': 'train',
      'num_examples': int(len(images)),
      'std_epsilon': STD_EPSILON,
      'std_min': float(std.min()),
      'std_max': float(std.max()),
      'zca': bool(compute_zca),
  }
  if compute_zca:
    arrays.update(fit_zca(images, epsilon=zca_epsilon))
    lam = arrays['zca_eigenvalues']
    params.update({
        'gcn_scale': GCN_SCALE,
        'gcn_min_divisor': GCN_MIN_DIVISOR,
        'zca_epsilon': zca_epsilon,
        'zca_method': 'covariance' if len(images) >= mean.size else 'gram',
        # How white the whitened data is: the share of eigen-directions with
        # lambda / (lambda + eps) above 0.9, i.e. lambda > 9 eps.
        'zca_white_directions': int((lam > 9 * zca_epsilon).sum()),
        'zca_out_std_min': float(arrays['zca_out_std'].min()),
        'zca_out_std_max': float(arrays['zca_out_std'].max()),
    })
  return arrays, params


def fold_zca(arrays, std_epsilon=STD_EPSILON):
  """Folds ZCA and the final standardization into (kernel, bias), float32.

  ((g - zca_mean) @ P) / (zca_out_std + eps) == g @ kernel + bias.
  """
  inv = 1.0 / (arrays['zca_out_std'] + std_epsilon)
  kernel = arrays['zca_matrix'] * inv[None, :]
  bias = -(arrays['zca_mean'] @ arrays['zca_matrix']) * inv
  return kernel.astype(np.float32), bias.astype(np.float32)


def save_npz(path, arrays, fingerprint):
  """Writes stats.npz atomically; returns the sha256 of its bytes."""
  buf = io.BytesIO()
  np.savez(buf, fingerprint=np.array(fingerprint), **arrays)
  fileio.atomic_write(path, buf.getvalue())
  return hashlib.sha256(buf.getvalue()).hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class Stats:
  """The statistics of one prepared data_dir (see the module docstring).

  Attributes:
    info: the stats.json manifest.
    arrays: float64 arrays from stats.npz: mean, std and, when ZCA was
      computed, zca_mean, zca_matrix, zca_eigenvalues, zca_out_std.
  """
  info: dict
  arrays: dict

  @property
  def image_shape(self):
    return tuple(self.info['image_shape'])

  @property
  def num_classes(self):
    return int(self.info['num_classes'])

  @property
  def has_zca(self):
    return 'zca_matrix' in self.arrays

  def standardize_params(self):
    """(mean, std + 1e-3) as float32 [D]: x <- (x - mean) / denominator."""
    eps = self.info['stats']['std_epsilon']
    return (self.arrays['mean'].astype(np.float32),
            (self.arrays['std'] + eps).astype(np.float32))

  def zca_params(self):
    """(gcn_scale, kernel [D, D], bias [D]) in float32, folded so that

    zca(x) = gcn(x) @ kernel + bias
           = ((gcn(x) - zca_mean) @ P) / (zca_out_std + 1e-3).
    """
    if not self.has_zca:
      raise errors.DataError(
          'These statistics hold no ZCA (prepare ran with ZCA disabled). '
          "Use preprocessing='standardize', or re-run data_prep.prepare with "
          'ZCA enabled (the default).')
    kernel, bias = fold_zca(self.arrays, self.info['stats']['std_epsilon'])
    return float(self.info['stats']['gcn_scale']), kernel, bias


def load_stats(data_dir, dataset=None):
  """Loads and cross-checks stats.json and stats.npz of a prepared data_dir.

  Args:
    data_dir: directory written by `python -m data_prep.prepare`.
    dataset: optional expected dataset name ('cifar10', ...).

  Returns:
    A `Stats`. Its arrays are read-only: an unchanged local stats.npz is
    read and checked once per process, and every call shares the arrays
    (copy one to modify it).

  Raises:
    DataError: not prepared, stats.npz missing or unreadable, or its
      fingerprint differs from the one in stats.json.
  """
  info = manifest.load_manifest(data_dir, dataset)
  path = os.path.join(data_dir, manifest.STATS_NPZ)
  fix = manifest.fix_command(data_dir, info)
  if not fileio.exists(path):
    raise errors.DataError(f'Missing {path}, although stats.json exists. '
                           f'Re-create the dataset: {fix}')
  # A run reads the statistics once per input pipeline and once more for
  # the saved model; with ZCA that is a 75 MB file hashed and decoded each
  # time, so a local file that has not changed is read once per process
  # (any write or copy over it changes its ctime, which no tool can set).
  key = None
  if not fileio.is_remote(path):
    status = os.stat(path)
    key = (os.path.abspath(path), status.st_ino, status.st_size,
           status.st_mtime_ns, status.st_ctime_ns, info['fingerprint'],
           info.get(manifest.STATS_NPZ_SHA256))
  arrays = _CACHE.get(key) if key else None
  if arrays is None:
    arrays = _read_npz(path, info, fix)
    if key:
      _CACHE.clear()  # One data_dir at a time: the ZCA matrix is large.
      _CACHE[key] = arrays
  return Stats(info=info, arrays=dict(arrays))


def _read_npz(path, info, fix):
  """stats.npz's arrays, read-only, after every check against `info`."""
  try:
    with fileio.open_file(path, 'rb') as f:
      content = f.read()
    with np.load(io.BytesIO(content), allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise errors.DataError(f'{path} is corrupt ({type(e).__name__}: {e}). '
                           f'Re-create the dataset: {fix}') from None
  stored = str(arrays.pop('fingerprint', ''))
  if stored != info['fingerprint']:
    raise errors.DataError(
        f'Statistics fingerprint mismatch in {os.path.dirname(path)}: {path} '
        f'was computed for shards with fingerprint '
        f'{stored[:12] or "<none>"}, but stats.json describes shards with '
        f'fingerprint {info["fingerprint"][:12]}. The files come from '
        f'different runs. Re-create the dataset: {fix}')
  stored_sha = info.get(manifest.STATS_NPZ_SHA256)
  if stored_sha is None:
    raise errors.DataError(
        f'stats.json beside {path} has no {manifest.STATS_NPZ_SHA256}, so '
        f'{path} cannot be checked. Re-create the dataset: {fix}')
  if stored_sha != hashlib.sha256(content).hexdigest():
    raise errors.DataError(
        f'{path} was modified after preparation (its sha256 differs from '
        f'{manifest.STATS_NPZ_SHA256} in stats.json). Re-create the '
        f'dataset: {fix}')
  _check_arrays(arrays, path, fix)
  for array in arrays.values():
    array.flags.writeable = False  # Shared by every caller in the process.
  return arrays


def _check_arrays(arrays, path, fix):
  """Every statistic finite; the standard deviations positive."""
  for name, array in arrays.items():
    if array.dtype.kind == 'f' and not np.all(np.isfinite(array)):
      raise errors.DataError(
          f'{path}: {name} holds {int(np.sum(~np.isfinite(array)))} '
          f'non-finite values. Re-create the dataset: {fix}')
  for name in ('std', 'zca_out_std'):
    if name in arrays and (not np.all(arrays[name] >= 0) or
                           not np.any(arrays[name] > 0)):
      raise errors.DataError(f'{path}: {name} is negative or zero everywhere. '
                             f'Re-create the dataset: {fix}')
