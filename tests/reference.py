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


def _pad_same(x, kernel, strides):
  """Zero-pads the spatial axes of channels-last `x` as 'same' does."""
  pads = [(0, 0)] + [same_padding(x.shape[1 + i], k, s)
                     for i, (k, s) in enumerate(zip(kernel, strides))] + [
                         (0, 0)]
  return np.pad(x, pads)


def conv_nd(x, w, strides, padding):
  """N-d channels-last cross-correlation; w is (*kernel, c_in, c_out)."""
  kernel = w.shape[:-2]
  if padding == 'same':
    x = _pad_same(x, kernel, strides)
  out_sizes = [(x.shape[1 + i] - k) // s + 1
               for i, (k, s) in enumerate(zip(kernel, strides))]
  out = np.zeros((x.shape[0], *out_sizes, w.shape[-1]))
  for offset in np.ndindex(*kernel):
    index = (slice(None),) + tuple(
        slice(o, o + s * n, s) for o, s, n in zip(offset, strides, out_sizes))
    out += x[index] @ w[offset]
  return out


def conv_transpose_nd(x, w, strides, padding):
  """The transpose of `conv_nd`; w is (*kernel, c_out, c_in) as in Keras.

  Scatters every input position through the kernel into the full output,
  ((n - 1) * s + k per axis), then crops it to n * s for 'same', as the
  gradient of a 'same' convolution of an input of n * s would.
  """
  kernel = w.shape[:-2]
  sizes = x.shape[1:-1]
  full = np.zeros((x.shape[0], *[(n - 1) * s + k for n, s, k in zip(
      sizes, strides, kernel)], w.shape[-2]))
  for offset in np.ndindex(*kernel):
    index = (slice(None),) + tuple(
        slice(o, o + s * (n - 1) + 1, s)
        for o, s, n in zip(offset, strides, sizes))
    full[index] += x @ w[offset].T
  if padding == 'valid':
    return full
  index = [slice(None)]
  for n, s, k in zip(sizes, strides, kernel):
    before = max(k - s, 0) // 2
    index.append(slice(before, before + n * s))
  return full[tuple(index)]


def depthwise_nd(x, w, strides, padding):
  """Depthwise convolution; w is (*kernel, c_in, multiplier); output
  channel c * multiplier + m is channel c convolved with w[..., c, m]."""
  c_in, mult = w.shape[-2:]
  outs = [conv_nd(x[..., c:c + 1], w[..., c:c + 1, m:m + 1], strides, padding)
          for c in range(c_in) for m in range(mult)]
  return np.concatenate(outs, axis=-1)
