"""The Keras-only runner's input: NumPy preprocessing, augmentation, batches.

The same definitions as the TensorFlow pipeline (`normprop_tf.data`):

- preprocessing 'standardize' ((x - mean) / (std + 1e-3) per dimension),
  'zca' (GCN, then the folded ZCA matmul), 'minibatch' (each batch's own
  statistics) or 'none' (x / 255), from the same `Stats` parameters, in
  float32;
- "+aug": zero-pad 4 pixels, a random 32x32 crop and a random horizontal
  flip per image (`normprop_tf.data.augment`); here drawn with NumPy's
  generator seeded by (seed, epoch, batch), so the same definition with other
  random draws than the TensorFlow path's;
- training batches: a seeded shuffle per epoch and the last partial batch
  dropped, as `make_dataset(training=True)`.
"""

import functools

import keras
import numpy as np

from normprop_tf.data import stats as stats_lib

PAD = 4


def preprocess(images, preprocessing, stats):
  """The per-image (deterministic) part of `preprocessing`, float32."""
  x = images.astype(np.float32)
  if preprocessing == 'standardize':
    mean, denominator = stats.standardize_params()
    shape = x.shape[1:]
    return (x - mean.reshape(shape)) / denominator.reshape(shape)
  if preprocessing == 'zca':
    scale, kernel, bias = stats.zca_params()
    flat = x.reshape(len(x), -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    divisor = np.sqrt(np.sum(centred**2, axis=1, keepdims=True)) / scale
    divisor = np.where(divisor < stats_lib.GCN_MIN_DIVISOR, 1.0, divisor)
    out = (centred / divisor) @ kernel + bias
    return out.reshape(x.shape).astype(np.float32)
  if preprocessing == 'none':
    return x / 255.0
  return x  # 'minibatch': per batch, in `TrainBatches`.


def minibatch_standardize(x, epsilon=stats_lib.STD_EPSILON):
  mean = x.mean(axis=0, keepdims=True)
  return (x - mean) / (x.std(axis=0, keepdims=True) + epsilon)


def augment(images, rng, pad=PAD):
  """Pad, randomly crop back to H x W, randomly flip: one draw per image."""
  n, height, width = images.shape[:3]
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))
  rows = offsets[:, :1] + np.arange(height)[None, :]
  cols = offsets[:, 1:] + np.arange(width)[None, :]
  out = padded[np.arange(n)[:, None, None], rows[:, :, None],
               cols[:, None, :]]
  flip = rng.random(n) < 0.5
  out[flip] = out[flip, :, ::-1]
  return out


class TrainBatches(keras.utils.PyDataset):
  """Seeded, shuffled, optionally augmented training batches for `fit`.

  One Keras "epoch" of this dataset is the whole run: `total_steps`
  batches, batch k being step k + 1. Each batch is a pure function of its
  index (the data epoch, its seeded permutation, the batch's augmentation
  seed), so worker threads can fetch batches in any order and the run stays
  deterministic.

  Args:
    images: float32 preprocessed training images [N, H, W, C].
    labels: int labels [N].
    batch_size: examples per step; each data epoch drops its last partial
      batch.
    seed: the run's seed.
    total_steps: the run's length.
    augment_images: apply "+aug".
    minibatch: standardize each batch with its own statistics.
    **kwargs: `PyDataset` arguments (workers, ...).
  """

  def __init__(self, images, labels, batch_size, seed, total_steps,
               augment_images=False, minibatch=False, **kwargs):
    super().__init__(**kwargs)
    self.images, self.labels = images, labels.astype(np.int32)
    self.batch_size, self.seed = batch_size, seed
    self.total_steps = total_steps
    self.steps_per_epoch = len(labels) // batch_size
    self.augment_images, self.minibatch = augment_images, minibatch

  @functools.lru_cache(maxsize=4)
  def _order(self, epoch):
    return np.random.default_rng([self.seed, 7, epoch]).permutation(
        len(self.labels))

  def __len__(self):
    return self.total_steps

  def __getitem__(self, index):
    epoch, i = divmod(index, self.steps_per_epoch)
    rows = self._order(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
    x = self.images[rows]
    if self.augment_images:
      x = augment(x, np.random.default_rng([self.seed, 8, index]))
    if self.minibatch:
      x = minibatch_standardize(x)
    return x, self.labels[rows]
