"""The NormProp and weight-norm math as small pure functions of `keras.ops`.

The layers in `normprop_tf.layers` only own weights and call these. Every
function takes plain tensors, so the math can be tested, reused and folded
(`normprop_tf.export`) without a layer in sight.

The per-unit scale gamma / ||W_i|| is applied to the kernel, O(parameters),
rather than to the layer output, O(activations): `(x @ W) * s == x @ (W * s)`
for a per-output-column s. Gradients flow through the norm (no
stop_gradient), as in weight normalization.
"""

import math
import numbers

import keras
from keras import ops

from normprop_tf import activations

# Guards the division for an all-zero weight vector; 1e-12 is far below any
# squared norm a trained unit has, so it leaves the float64 math at ~1e-12.
NORM_EPSILON = 1e-12


def kernel_norm(kernel):
  """L2 norm of each unit's incoming weights: all axes but the last.

  Args:
    kernel: a Dense kernel (n_in, units) or a Conv2D kernel
      (kh, kw, c_in, filters).

  Returns:
    A vector with one norm per output unit, in the kernel's dtype.
  """
  axes = tuple(range(len(kernel.shape) - 1))
  return ops.sqrt(ops.sum(ops.square(kernel), axis=axes) + NORM_EPSILON)


def _ones(scale):
  """Ones shaped like a scale variable (ones_like would not take a JAX
  backend's Keras variable)."""
  return ops.ones(tuple(scale.shape), dtype=scale.dtype)


def scaled_kernel(kernel, gamma, divisor=1.0, post_scale=1.0):
  """Returns W * gamma * post_scale / (divisor * ||W_i||) per output unit.

  Args:
    kernel: float32 (or float64) kernel; the norm is computed in its dtype.
    gamma: per-unit scale, shape (units,).
    divisor: the authors' fixed 1.21 divisor, or 1.0.
    post_scale: extra per-layer factor folded in for free (NormProp folds 1/c2
      here when the activation is positively homogeneous).
  """
  scale = gamma * (post_scale / divisor) / kernel_norm(kernel)
  return kernel * scale


def post_normalize(u, activation):
  """NormProp's output re-normalization: (f(u) - c1) / c2."""
  m = activations.moments(activation)
  return (activations.keras_fn(activation)(u) - m.mean) / m.std


# The keys of the dict `normprop` and `weight_norm` return for
# `return_intermediates=True`.
INTERMEDIATES = ('projection', 'preactivation', 'output')


def normprop(x, kernel, gamma, beta, linear, activation='relu', divisor=1.0,
             compute_dtype=None, return_intermediates=False, input_shift=0.0,
             center_output=True):
  """One NormProp layer: o = (f(gamma * (W_i . x) / ||W_i|| + beta) - c1) / c2.

  Args:
    x: the layer input.
    kernel: the unnormalized kernel (float32 under mixed precision).
    gamma: per-unit scale (float32).
    beta: per-unit shift.
    linear: `linear(x, w)` applies the kernel: a matmul or a convolution.
      With `input_shift` s it must satisfy the contract of `shifted_linear`.
    activation: an activation name from `normprop_tf.activations`, or None
      for the classifier form gamma * (W_i . x) / ||W_i|| + beta.
    divisor: the authors' fixed divisor (1.21 in their code), or 1.0.
    compute_dtype: dtype to cast the scaled kernel and beta to; None keeps
      the kernel's dtype. The norm itself always uses the kernel's dtype.
    return_intermediates: if True return a dict with 'projection'
      (W_i . x / ||W_i||, which NormProp assumes is N(0, 1)), 'preactivation'
      (u) and 'output' (o, centred whatever `center_output` says). Costs
      two extra linear ops: for probes only.
    input_shift: a constant s by which `x` exceeds the layer's real input:
      the layer computes its function of x - s, with s * sum(W_i) taken off
      its bias instead of a pass over x (see `shifted_linear`).
    center_output: False leaves out the final `- c1/c2` (positively
      homogeneous activations only): the output is then o + c1/c2, and the
      consumer takes the constant, e.g. with `input_shift=c1/c2`.

  Returns:
    The output tensor, or the dict above.
  """
  cast = (lambda t: ops.cast(t, compute_dtype)) if compute_dtype else (
      lambda t: t)

  def affine(w, b):
    """linear(real input, w) + b, with the shift moved into the bias."""
    if input_shift:
      b = b - input_shift * ops.sum(w, axis=tuple(range(len(w.shape) - 1)))
    return add_bias(linear(x, cast(w)), cast(b))

  if return_intermediates:
    projection = affine(scaled_kernel(kernel, _ones(gamma)), _zeros(beta))
    u = affine(scaled_kernel(kernel, gamma, divisor), beta)
    out = u if activation is None else post_normalize(u, activation)
    return {'projection': projection, 'preactivation': u, 'output': out}

  if activation is None:
    return affine(scaled_kernel(kernel, gamma, divisor), beta)
  m = activations.moments(activation)
  f = activations.keras_fn(activation)
  if activations.is_positively_homogeneous(activation):
    # f(u) / c2 == f(u / c2) for c2 > 0: fold 1/c2 into the kernel scale and
    # beta, leaving one subtraction as the only extra pass over activations,
    # and none when the consumer takes it (center_output=False).
    r = f(affine(scaled_kernel(kernel, gamma, divisor, post_scale=1.0 / m.std),
                 beta / m.std))
    return r - m.mean / m.std if center_output else r
  u = affine(scaled_kernel(kernel, gamma, divisor), beta)
  return (f(u) - m.mean) / m.std


# When a layer takes a constant input shift s into its bias (s * sum(W) off
# it) rather than subtracting s from its input: the bias route costs a
# reduction of the kernel and, in the backward pass, a broadcast of the
# bias gradient over it (a few passes over the kernel, plus their ops); the
# subtraction costs one pass over the input. Measured on NIN training steps
# (reports/perf.md): at batch 1, where a layer's input is about its
# kernel's size, subtracting was 12% faster per step; at batch 128 taking it
# into the bias was 4% faster. The bias route is taken from an input 16
# times the kernel's size up, and whenever the batch size is unknown.
SHIFT_ABSORB_RATIO = 16


def absorbs_shift(input_shape, kernel_shape):
  """Whether a constant input shift goes into the bias (see above)."""
  # A dimension that is not an integer is unknown: None under TensorFlow,
  # a symbolic dimension while JAX traces a functional model.
  dims = (*input_shape, *kernel_shape)
  if not all(isinstance(d, numbers.Integral) for d in dims):
    return True
  return math.prod(input_shape) >= SHIFT_ABSORB_RATIO * math.prod(kernel_shape)


def _zeros(vector):
  return ops.zeros(tuple(vector.shape), dtype=vector.dtype)


def shifted_linear(linear, input_shift, pad=None):
  """The `linear` that `normprop(..., input_shift=s)` needs.

  Contract: shifted(x, w) == linear(x - s, w) + s * sum(w over input axes).
  A matmul and an unpadded convolution (1x1, or 'valid') satisfy it as they
  are. A zero-padded ('same') convolution does not at the borders: there
  `pad` pads x with the value s instead of 0 and `linear` must then be the
  'valid' convolution, since conv_valid(pad_s(x)) = conv_same(x - s) +
  s * sum(w) exactly.

  Args:
    linear: `linear(x, w)`.
    input_shift: s, a Python float.
    pad: None, or `pad(x, value)` giving 'same' padding with `value`.
  """
  if not input_shift or pad is None:
    return linear
  return lambda x, w: linear(pad(x, input_shift), w)


def same_padding(size, kernel, stride, dilation=1):
  """(before, after) zero padding of one axis under 'same', as TF and JAX
  compute it (the extra element, if any, after)."""
  extent = (kernel - 1) * dilation + 1
  out = -(-size // stride)
  total = max((out - 1) * stride + extent - size, 0)
  return total // 2, total - total // 2


def conv_output_size(size, kernel, stride, padding, dilation=1):
  """One spatial axis of a convolution's output (None stays None)."""
  if size is None:
    return None
  if padding == 'same':
    return -(-size // stride)
  return (size - (kernel - 1) * dilation - 1) // stride + 1


def weight_norm(x, kernel, g, bias, linear, activation=None,
                compute_dtype=None, return_intermediates=False):
  """Weight normalization (Salimans & Kingma 2016): f(g * (v . x)/||v|| + b).

  No statistics correction: this is NormProp without the c1/c2 step and
  without the paper's gamma init. Arguments as in `normprop`, except that
  `activation` may be any name `keras.activations.get` accepts.
  """
  cast = (lambda t: ops.cast(t, compute_dtype)) if compute_dtype else (
      lambda t: t)
  u = add_bias(linear(x, cast(scaled_kernel(kernel, g))), cast(bias))
  out = keras.activations.get(activation)(u)
  if return_intermediates:
    projection = linear(x, cast(scaled_kernel(kernel, _ones(g))))
    return {'projection': projection, 'preactivation': u, 'output': out}
  return out


def add_bias(y, bias):
  """y + bias, per output unit (the last axis).

  The `+` operator, not `ops.add`: for a vector bias the TensorFlow backend
  turns `ops.add` into `BiasAdd`, whose gradient oneDNN fuses into the
  filter gradient (`Conv2DBackpropFilterWithBias`). That saves CPU time
  (~75 ms of op time per NIN step at width 1.0, batch 128) but costs wall
  time on this 2-core machine: the separate `Sum` of `+`'s gradient runs on
  the other core, in parallel with the filter gradient. Measured,
  interleaved, median of 7: NormProp training 2-8% faster with `+`
  (`python -m benchmarks.ab --experiment=bias_add`, reports/perf.md). The forward pass
  fuses conv + add + ReLU either way.
  """
  return y + bias


def dense(x, w):
  """The Dense linear map."""
  return ops.matmul(x, w)


def conv2d_fn(strides, padding, dilation_rate=(1, 1)):
  """Returns `linear(x, w)` for a channels-last 2-D convolution."""
  def linear(x, w):
    return ops.conv(x, w, strides=strides, padding=padding,
                    data_format='channels_last', dilation_rate=dilation_rate)
  return linear


def same_pad_fn(spatial, kernel_size, strides, dilation_rate):
  """Returns `pad(x, value)`: 'same' padding of channels-last 2-D maps of
  static size `spatial` (height, width), with `value` instead of zeros."""
  widths = [(0, 0)] + [same_padding(n, k, s, d) for n, k, s, d in zip(
      spatial, kernel_size, strides, dilation_rate)] + [(0, 0)]

  def pad(x, value):
    return ops.pad(x, widths, constant_values=value)
  return pad
