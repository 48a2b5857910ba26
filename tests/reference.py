"""Independent float64 NumPy references of the method's equations, for tests.

Written from docs/method.md ("A hidden layer"), not from normprop_tf.functional, so that a
mistake in the library cannot cancel out in the comparison.
"""

import math

import numpy as np

C1 = math.sqrt(1.0 / (2.0 * math.pi))
C2 = math.sqrt((1.0 - 1.0 / math.pi) / 2.0)


def same_padding(size, k, stride):
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return total // 2, total - total // 2


def conv2d(x, w, stride=1, padding='same'):
  """Channels-last cross-correlation, as tf.nn.conv2d computes it."""
  kh, kw = w.shape[:2]
  if padding == 'same':
    ph, pw = same_padding(x.shape[1], kh, stride), same_padding(
        x.shape[2], kw, stride)
    x = np.pad(x, ((0, 0), ph, pw, (0, 0)))
  oh = (x.shape[1] - kh) // stride + 1
  ow = (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], oh, ow, w.shape[-1]))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
      out += patch @ w[i, j]
  return out


def unit_norm(w):
  axes = tuple(range(w.ndim - 1))
  return np.sqrt(np.sum(np.asarray(w, np.float64)**2, axis=axes))


def normprop(x, w, gamma, beta, f=None, c1=C1, c2=C2, divisor=1.0,
             conv=False, stride=1, padding='same'):
  """o = (f(gamma * (W_i . x) / (divisor ||W_i||) + beta) - c1) / c2."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  lin = conv2d(x, w, stride, padding) if conv else x @ w
  u = gamma * lin / (divisor * unit_norm(w)) + beta
  if f is None:
    return u
  return (f(u) - c1) / c2


def weight_norm(x, v, g, b, f=lambda u: u, conv=False):
  x, v = np.asarray(x, np.float64), np.asarray(v, np.float64)
  lin = conv2d(x, v) if conv else x @ v
  return f(g * lin / unit_norm(v) + b)
