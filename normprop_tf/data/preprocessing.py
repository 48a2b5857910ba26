"""Graph-side input preprocessing for tf.data (see stats.py for the math).

Every function takes a batch of images [B, H, W, C] (uint8 or float) and
returns float32 of the same shape. 'standardize', 'zca' and 'none' act on
each image independently; 'minibatch' uses the statistics of the batch
itself, the paper's Figure 1 comparison. The Keras twin of 'standardize'
and 'zca' is `InputNormalization`; a test keeps the two equal.
"""

import tensorflow as tf

from normprop_tf.data import spec
from normprop_tf.data import stats as stats_lib

PREPROCESSINGS = spec.PREPROCESSINGS


def check_preprocessing(preprocessing):
  if preprocessing not in PREPROCESSINGS:
    raise ValueError(f'`preprocessing` must be one of {PREPROCESSINGS}. '
                     f'Received: preprocessing={preprocessing!r}')
  return preprocessing


def scale01(images):
  """'none': x / 255."""
  return tf.cast(images, tf.float32) / 255.0


def standardize(images, mean, denominator):
  """(x - mean) / (std + 1e-3), per dimension; mean/denominator are [D]."""
  x = tf.cast(images, tf.float32)
  shape = tf.shape(x)[1:]
  return (x - tf.reshape(mean, shape)) / tf.reshape(denominator, shape)


def gcn(flat, scale=stats_lib.GCN_SCALE,
        min_divisor=stats_lib.GCN_MIN_DIVISOR):
  """Global contrast normalization of float32 rows [B, D] to L2 norm `scale`."""
  x = flat - tf.reduce_mean(flat, axis=1, keepdims=True)
  divisor = tf.sqrt(tf.reduce_sum(tf.square(x), axis=1, keepdims=True)) / scale
  divisor = tf.where(divisor < min_divisor, tf.ones_like(divisor), divisor)
  return x / divisor


def zca(images, gcn_scale, kernel, bias):
  """GCN, then the folded ZCA + per-dimension standardization: one matmul."""
  x = tf.cast(images, tf.float32)
  shape = tf.shape(x)
  flat = tf.reshape(x, [shape[0], -1])
  out = tf.matmul(gcn(flat, gcn_scale), kernel) + bias
  return tf.reshape(out, shape)


def minibatch_standardize(images, epsilon=stats_lib.STD_EPSILON):
  """Per-dimension standardization with the batch's own mean and std.

  A batch of one maps to all zeros (its std is 0).
  """
  x = tf.cast(images, tf.float32)
  mean, var = tf.nn.moments(x, axes=[0], keepdims=True)
  return (x - mean) / (tf.sqrt(var) + epsilon)


def per_image_fn(preprocessing, stats):
  """The per-image (cacheable) part of `preprocessing`, as a batch function.

  Returns None for 'minibatch', whose work happens after batching.
  """
  check_preprocessing(preprocessing)
  if preprocessing == 'standardize':
    mean, denominator = (tf.constant(a) for a in stats.standardize_params())
    return lambda images: standardize(images, mean, denominator)
  if preprocessing == 'zca':
    scale, kernel, bias = stats.zca_params()
    kernel, bias = tf.constant(kernel), tf.constant(bias)
    return lambda images: zca(images, scale, kernel, bias)
  if preprocessing == 'none':
    return scale01
  return None
