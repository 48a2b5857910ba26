"""Weight normalization and NormProp for any Keras layer with a kernel.

    # tensorflow-addons:   tfa.layers.WeightNormalization(layer, data_init=True)
    # normprop_tf:          normprop_tf.WeightNormalization(layer, data_init=True)
    x = npt.WeightNormalization(keras.layers.Conv1D(64, 3, activation='relu'))(x)
    x = npt.NormPropagation(keras.layers.Conv1D(64, 3), activation='relu')(x)

Both wrappers keep the wrapped layer's kernel `v` as the direction and call
the wrapped layer itself with the kernel replaced by `g * v / ||v||`, per
output unit, over the kernel's input axes. Which axes hold the output units
depends on the layer (`output_axes`):

| layer | kernel | output axes |
|---|---|---|
| `Dense`, `Conv1D/2D/3D` | `kernel` | last |
| `Conv1DTranspose/2DTranspose/3DTranspose` | `kernel` (..., out, in) | second to last |
| `DepthwiseConv1D/2D` | `kernel` (..., in, multiplier) | the last two: each (channel, multiplier) pair is a unit |
| `SeparableConv1D/2D` | `pointwise_kernel` | last (the depthwise kernel stays as it is) |
| any other layer with a `kernel` | `kernel` | last, as tensorflow-addons assumed |

The replacement is done with `keras.StatelessScope`, which is how Keras
itself calls a layer with other variable values, so the wrapped layer's own
`call` runs unchanged under every backend, and gradients flow through the
norm into `v` and `g`.

`WeightNormalization(data_init=True)` gives Salimans and Kingma's
data-dependent initialization: on the first batch it sees (the first call
with data), with t = v . x / ||v||, it sets the effective g to 1 / std(t)
and the effective bias to -mean(t) / std(t), per output unit, so that the
pre-activations of that batch have mean 0 and std 1. (tensorflow-addons'
last release computed these moments of v . x without dividing by ||v||, so
its pre-activations have mean 0 and std 1 only when ||v|| = 1.) The
statistics are over the global batch: under tf.distribute each replica's
moments are all-reduced, and under JAX's data parallelism a batch mean is
global already. The initialization is stored in non-trainable variables,
`g_offset` and `bias_offset`, added to the trainable `g` and bias: Keras'
JAX trainer keeps only non-trainable state that a training step assigns, and
an additive offset leaves every gradient and optimizer update of the
effective g and bias exactly as if they had been assigned (weight decay
aside, which would pull g towards its initial value instead of 0). The flag
`initialized` makes it happen once; all three are saved with the weights.
`effective_g()` and `effective_bias()` give the values in use.
"""

import sys

import keras
from keras import ops
# Not in Keras' public API: the one way to read a variable in its own dtype
# inside a mixed-precision call (`_variable_dtype`).
from keras.src.backend import AutocastScope
import numpy as np

from normprop_tf import activations
from normprop_tf import functional
from normprop_tf.utils import checks

_PACKAGE = 'normprop_tf'
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
               keras.layers.Conv3DTranspose)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_DATA_EPSILON = 1e-10  # Added to the variance, as in tensorflow-addons.


def kernel_attribute(layer):
  """The name of the kernel a wrapper normalizes in `layer`."""
  return 'pointwise_kernel' if isinstance(layer, _SEPARABLE) else 'kernel'


def output_axes(layer, rank):
  """The axes of `layer`'s kernel (of `rank`) that index its output units."""
  if isinstance(layer, _TRANSPOSED):
    return (rank - 2,)
  if isinstance(layer, _DEPTHWISE):
    return (rank - 2, rank - 1)
  return (rank - 1,)


def _channel_axis(layer, rank):
  """The output's channel axis (convolutions may be channels_first)."""
  return 1 if getattr(layer, 'data_format', None) == 'channels_first' and (
      rank > 2) else rank - 1


def _variable_dtype(dtype):
  """A scope in which float variables read in `dtype`, their own dtype.

  Keras enters an autocast scope around the call of a layer whose compute
  and variable dtypes differ even when the layer sets autocast=False, and the
  wrapped layer's kernel and bias autocast. The norm and the data-dependent
  init must see them in float32 under mixed precision; the wrapped layer
  casts the kernel it is handed itself, inside its own call. (A scope of
  None would not do: inside it an autocasting variable reports floatx as
  its dtype.)
  """
  return AutocastScope(dtype)


def _global_sum(value):
  """`value` summed over tf.distribute replicas; itself everywhere else.

  Under JAX's data parallelism a reduction over the batch is global
  already. TensorFlow is used only when it is the backend (and therefore
  imported); the core imports no TensorFlow.
  """
  if keras.backend.backend() != 'tensorflow':
    return value
  tf = sys.modules['tensorflow']
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return value
  return context.all_reduce('SUM', value)


class _KernelWrapper(keras.layers.Wrapper):
  """What both wrappers share: the kernel, its norm, the stateless call."""

  def __init__(self, layer, **kwargs):
    if not isinstance(layer, keras.layers.Layer):
      raise ValueError(
          f'{type(self).__name__} wraps a Keras layer instance. Received: '
          f'layer={layer!r}')
    # Reads of `g` and `v` stay float32 under mixed precision: the norm is
    # computed there, and the wrapped layer casts the kernel itself.
    kwargs.setdefault('autocast', False)
    super().__init__(layer, **kwargs)

  def build(self, input_shape):
    if not self.layer.built:
      self.layer.build(input_shape)
    name = kernel_attribute(self.layer)
    kernel = getattr(self.layer, name, None)
    if kernel is None or len(kernel.shape) < 2:
      raise ValueError(
          f'{type(self).__name__} needs a layer with a kernel of rank >= 2 '
          f'(Dense, Conv, ConvTranspose, DepthwiseConv, SeparableConv). '
          f'Received: layer {self.layer.name!r} of type '
          f'{type(self.layer).__name__}, which has '
          f'{"no kernel" if kernel is None else f"a kernel of shape {kernel.shape}"}.')
    self._kernel_name = name
    rank = len(kernel.shape)
    self._out_axes = output_axes(self.layer, rank)
    self._norm_axes = tuple(a for a in range(rank) if a not in self._out_axes)
    self.unit_shape = tuple(int(kernel.shape[a]) for a in self._out_axes)
    self._scale_shape = tuple(int(kernel.shape[a]) if a in self._out_axes
                              else 1 for a in range(rank))
    self.num_units = int(np.prod(self.unit_shape))
    # The wrapper's variables take the kernel's dtype (float32 under mixed
    # precision, float64 for a float64 layer).
    self._kernel_dtype = kernel.dtype
    bias = getattr(self.layer, 'bias', None)
    if bias is not None and tuple(bias.shape) != (self.num_units,):
      raise ValueError(
          f'{type(self).__name__} needs one bias per output unit of layer '
          f'{self.layer.name!r}: {self.num_units}. Received: a bias of '
          f'shape {tuple(bias.shape)}')

  @property
  def v(self):
    """The direction: the wrapped layer's own kernel variable."""
    return getattr(self.layer, self._kernel_name)

  def _unit_kernel(self):
    """v / ||v||, per output unit, in the kernel variable's dtype."""
    v = self.v.value
    norm = ops.sqrt(ops.sum(ops.square(v), axis=self._norm_axes,
                            keepdims=True) + functional.NORM_EPSILON)
    return v / norm

  def _zeros(self):
    return ops.zeros((self.num_units,), self._kernel_dtype)

  def _per_unit(self, vector):
    """A (num_units,) or unit-shaped vector, broadcastable to the kernel."""
    return ops.reshape(vector, self._scale_shape)

  def _call_with(self, inputs, kernel, bias, linear=False, **kwargs):
    """The wrapped layer's call with `kernel` (and `bias`) in place.

    linear: call it without its activation (for statistics and probes).
    """
    mapping = [(var, var.value) for var in self.layer.variables]
    mapping = [(var, kernel if var is self.v else
                bias if var is getattr(self.layer, 'bias', None) and
                bias is not None else value) for var, value in mapping]
    activation = self.layer.activation if linear else None
    if linear:
      self.layer.activation = keras.activations.linear
    try:
      with keras.StatelessScope(state_mapping=mapping):
        return self.layer(inputs, **kwargs)
    finally:
      if linear:
        self.layer.activation = activation

  def _plain(self, kernel, bias, config_changes):
    """(a new, unbuilt copy of the wrapped layer, its weights as NumPy).

    The copy has the wrapped layer's config with `config_changes` and the
    weights of the wrapped layer with `kernel` and `bias` in place.
    """
    config = {**self.layer.get_config(), **config_changes}
    plain = type(self.layer).from_config(config)
    weights = []
    for var in self.layer.weights:
      if var is self.v:
        value = kernel
      elif var is getattr(self.layer, 'bias', None):
        value = bias
      else:
        value = var.value
      weights.append(np.asarray(keras.ops.convert_to_numpy(value)))
    return plain, weights

  def compute_output_shape(self, input_shape):
    return self.layer.compute_output_shape(input_shape)

  def compute_output_spec(self, inputs, **kwargs):
    return self.layer.compute_output_spec(inputs)

  def _layer_activation_name(self):
    act = getattr(self.layer, 'activation', None)
    return None if act is None else keras.activations.serialize(act)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WeightNormalization(_KernelWrapper):
  """Weight normalization (Salimans & Kingma, 2016) of any layer with a kernel.

  A Keras 3 replacement for `tfa.layers.WeightNormalization`, with the same
  constructor and semantics; migrating is the one-line change

      tfa.layers.WeightNormalization(layer, data_init=True)
      -> normprop_tf.WeightNormalization(layer, data_init=True)

  ```
  output = layer(x) with layer.kernel = g * v / ||v||   (per output unit)
  ```

  The wrapped layer keeps its activation and bias. With `data_init=False`, g
  starts at ||v||, so the wrapped layer initially computes what it computed
  before wrapping.

  Args:
    layer: a Keras layer with a kernel: `Dense`, `Conv1D/2D/3D`,
      `Conv1D/2D/3DTranspose`, `DepthwiseConv1D/2D`, `SeparableConv1D/2D`
      (its pointwise kernel), or another layer whose kernel's last axis
      indexes its outputs. Unbuilt; the wrapper builds it.
    data_init: if True (the default, as in tensorflow-addons), Salimans and
      Kingma's data-dependent initialization on the first batch (module
      docstring).
    **kwargs: base layer arguments (`name`, ...).

  Input and output shapes: those of the wrapped layer.

  Reference:
    - [Salimans & Kingma, 2016](https://arxiv.org/abs/1602.07868)
  """

  def __init__(self, layer, data_init=True, **kwargs):
    super().__init__(layer, **kwargs)
    self.data_init = checks.one_of('data_init', data_init, (True, False))

  def build(self, input_shape):
    super().build(input_shape)
    unit_kernel_norm = (None if self.data_init else np.sqrt(np.sum(np.square(
        keras.ops.convert_to_numpy(self.v).astype(np.float64)),
        axis=self._norm_axes)))
    self.g = self.add_weight(
        name='g', shape=self.unit_shape, autocast=False,
        dtype=self._kernel_dtype,
        initializer='ones' if self.data_init else
        keras.initializers.Constant(unit_kernel_norm))
    if self.data_init:
      state = dict(initializer='zeros', trainable=False, autocast=False,
                   dtype=self._kernel_dtype)
      self.g_offset = self.add_weight(name='g_offset', shape=self.unit_shape,
                                      **state)
      self.bias_offset = self.add_weight(name='bias_offset',
                                         shape=(self.num_units,), **state)
      self.initialized = self.add_weight(name='initialized', shape=(),
                                         **state)
    self.built = True

  def effective_g(self):
    """g as it scales the unit kernel (g, plus the data init's offset)."""
    return self.g + self.g_offset if self.data_init else self.g.value

  def effective_bias(self):
    """The bias in use, or None when the wrapped layer has none."""
    bias = getattr(self.layer, 'bias', None)
    if bias is None:
      return None
    return bias + self.bias_offset if self.data_init else bias.value

  def _local_moments(self, inputs):
    """(count, mean, M2) per output unit of t = v . x / ||v|| on this replica."""
    bias = getattr(self.layer, 'bias', None)
    t = self._call_with(inputs, self._unit_kernel(), None if bias is None else
                        self._zeros(), linear=True)
    t = ops.cast(t, self._kernel_dtype)
    rank = len(t.shape)
    channel = _channel_axis(self.layer, rank)
    t = ops.reshape(ops.moveaxis(t, channel, -1), (-1, self.num_units))
    count = ops.cast(ops.shape(t)[0], self._kernel_dtype)
    mean = ops.mean(t, axis=0)
    return (ops.ones((self.num_units,), self._kernel_dtype) * count, mean,
            ops.sum(ops.square(t - mean), axis=0))

  def _data_init(self, inputs):
    """Sets the offsets from this batch the first time; a no-op afterwards.

    The moments of t over the global batch: each replica's (count, mean,
    M2) are combined outside the cond (tf.distribute cannot all-reduce
    inside one) by two all-reduces of per-unit vectors, exact up to
    rounding (Chan et al.'s pairwise update, no E[t^2] - E[t]^2).
    """
    done = self.initialized.value > 0.5
    zeros = self._zeros()
    count, mean, m2 = ops.cond(
        done, lambda: (zeros, zeros, zeros),
        lambda: self._local_moments(inputs))
    total = ops.maximum(_global_sum(count), 1.0)
    global_mean = _global_sum(count * mean) / total
    variance = _global_sum(m2 + count * ops.square(mean - global_mean)) / total
    scale = 1.0 / ops.sqrt(variance + _DATA_EPSILON)
    bias = getattr(self.layer, 'bias', None)
    bias_value = zeros if bias is None else bias.value
    g_offset = ops.reshape(scale, self.unit_shape) - self.g.value
    bias_offset = -global_mean * scale - bias_value
    # Assigned outside the cond: JAX cannot carry state out of a branch.
    self.g_offset.assign(ops.where(done, self.g_offset.value, g_offset))
    self.bias_offset.assign(ops.where(done, self.bias_offset.value,
                                      bias_offset))
    self.initialized.assign(ops.ones(()))

  def call(self, inputs, return_intermediates=False, **kwargs):
    with _variable_dtype(self._kernel_dtype):
      return self._call(inputs, return_intermediates, **kwargs)

  def _call(self, inputs, return_intermediates, **kwargs):
    if self.data_init:
      self._data_init(inputs)
    unit = self._unit_kernel()
    kernel = unit * self._per_unit(self.effective_g())
    bias = self.effective_bias()
    out = self._call_with(inputs, kernel, bias, **kwargs)
    if not return_intermediates:
      return out
    projection = self._call_with(
        inputs, unit, None if bias is None else self._zeros(), linear=True)
    return {'projection': projection,
            'preactivation': self._call_with(inputs, kernel, bias,
                                             linear=True),
            'output': out}

  def remove(self):
    """The wrapped layer with its kernel and bias set to the effective ones.

    As `tfa.layers.WeightNormalization.remove()`: afterwards the returned
    layer computes what the wrapper computed, without it.
    """
    kernel = self._unit_kernel() * self._per_unit(self.effective_g())
    self.v.assign(ops.cast(kernel, self.v.dtype))
    bias = self.effective_bias()
    if bias is not None:
      self.layer.bias.assign(bias)
    return self.layer

  def plain_layer(self):
    """(plain copy, its weights, None, None) for `export.fold`.

    The copy computes what the wrapper computes: kernel g * v / ||v||, the
    effective bias, the wrapped layer's own activation; no activation or
    shift comes after it (see `NormPropagation.plain_layer`).
    """
    kernel = self._unit_kernel() * self._per_unit(self.effective_g())
    plain, weights = self._plain(kernel, self.effective_bias(), {})
    return plain, weights, None, None

  def get_config(self):
    return {**super().get_config(), 'data_init': self.data_init}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NormPropagation(_KernelWrapper):
  """Normalization Propagation (Arpit et al., 2016) of any layer with a kernel.

  ```
  u = gamma * layer_linear(x; kernel = v / ||v||) + beta
  output = (f(u) - c1) / c2      # c1 = E f(z), c2 = Std f(z), z ~ N(0, 1)
  ```

  gamma is the wrapper's, beta is the wrapped layer's bias, and f is the
  wrapper's `activation` (constants from `normprop_tf.activations`). With a
  positively homogeneous f (ReLU, leaky ReLU) 1/c2 is folded into the kernel
  and the bias, as in `NormPropConv2D`, whose function this is for a
  wrapped `Conv2D`. No batch statistics: the same function in training and
  inference, at any batch size.

  Args:
    layer: as in `WeightNormalization`, built without an activation (the
      wrapper applies f) and with a bias (it is beta).
    activation: a name in `normprop_tf.activations.SUPPORTED` ('relu' by
      default), or None for the classifier form u.
    gamma_initializer: defaults to the paper's 1/1.21 for ReLU (see
      `NormPropDense`), 1.0 when `activation=None`.
    weight_norm_divisor: None, or the authors' fixed divisor of ||v||
      (1.21), with gamma then starting at 1.
    **kwargs: base layer arguments.

  Reference:
    - [Arpit et al., 2016](https://arxiv.org/abs/1603.01431)
  """

  def __init__(self, layer, activation='relu', gamma_initializer=None,
               weight_norm_divisor=None, **kwargs):
    super().__init__(layer, **kwargs)
    if activation is not None:
      activation = activations.canonical_name(activation)
    act = self._layer_activation_name()
    if act not in (None, 'linear'):
      raise ValueError(
          f'NormPropagation applies its own activation ({activation!r}); '
          f'build the wrapped layer without one. Received: layer '
          f'{layer.name!r} with activation={act!r}')
    if getattr(layer, 'use_bias', True) is False:
      raise ValueError(
          'NormPropagation uses the wrapped layer\'s bias as beta; build it '
          f'with use_bias=True. Received: layer {layer.name!r} with '
          'use_bias=False')
    if weight_norm_divisor is not None:
      checks.positive_number('weight_norm_divisor', weight_norm_divisor)
    self.activation = activation
    self.weight_norm_divisor = weight_norm_divisor
    if gamma_initializer is None:
      gamma_initializer = keras.initializers.Constant(
          1.0 if activation is None or weight_norm_divisor is not None else
          activations.default_gamma(activation))
    self.gamma_initializer = keras.initializers.get(gamma_initializer)

  def build(self, input_shape):
    super().build(input_shape)
    if getattr(self.layer, 'bias', None) is None:
      raise ValueError(
          f'NormPropagation needs a bias in layer {self.layer.name!r} (its '
          f'beta). Received: a {type(self.layer).__name__} without one')
    self.gamma = self.add_weight(name='gamma', shape=self.unit_shape,
                                 initializer=self.gamma_initializer,
                                 autocast=False, dtype=self._kernel_dtype)
    self.built = True

  @property
  def beta(self):
    return self.layer.bias

  def _post(self):
    """(kernel scale, bias scale, shift) of the post-normalization."""
    if self.activation is None:
      return 1.0, 1.0, None
    m = activations.moments(self.activation)
    if activations.is_positively_homogeneous(self.activation):
      return 1.0 / m.std, 1.0 / m.std, m.mean / m.std
    return 1.0, 1.0, None

  def call(self, inputs, return_intermediates=False, **kwargs):
    with _variable_dtype(self._kernel_dtype):
      return self._call(inputs, return_intermediates, **kwargs)

  def _call(self, inputs, return_intermediates, **kwargs):
    divisor = self.weight_norm_divisor or 1.0
    unit = self._unit_kernel()
    gamma = self._per_unit(self.gamma.value)
    beta = self.beta.value
    if return_intermediates:
      u = self._call_with(inputs, unit * gamma / divisor, beta, linear=True)
      return {'projection': self._call_with(inputs, unit, self._zeros(),
                                            linear=True),
              'preactivation': u,
              'output': u if self.activation is None else
                        functional.post_normalize(u, self.activation)}
    kernel_scale, bias_scale, shift = self._post()
    u = self._call_with(inputs, unit * gamma * (kernel_scale / divisor),
                        beta * bias_scale, linear=True, **kwargs)
    if self.activation is None:
      return u
    if shift is not None:  # f(u) / c2 = f(u / c2), u already divided.
      return activations.keras_fn(self.activation)(u) - shift
    return functional.post_normalize(u, self.activation)

  def plain_layer(self):
    """(plain copy, its weights, activation, shift) for `export.fold`.

    For a positively homogeneous activation f: the copy (without an
    activation) has kernel gamma v / (divisor c2 ||v||) and bias beta / c2;
    the real output is f(copy's output) - `shift`, shift = c1 / c2, which
    the caller carries to the next layer. Without an activation, f and
    shift are None.

    Raises:
      ValueError: for an activation that is not positively homogeneous.
    """
    kernel_scale, bias_scale, shift = self._post()
    if self.activation is not None and shift is None:
      raise ValueError(
          'export.fold needs a positively homogeneous activation (relu, '
          'leaky_relu, identity) to move 1/c2 into the kernel. Received: '
          f'activation={self.activation!r} in layer {self.name!r}')
    gamma = self._per_unit(self.gamma.value)
    kernel = self._unit_kernel() * gamma * (
        kernel_scale / (self.weight_norm_divisor or 1.0))
    plain, weights = self._plain(kernel, self.beta.value * bias_scale, {})
    return plain, weights, self.activation, shift

  def get_config(self):
    return {**super().get_config(), 'activation': self.activation,
            'gamma_initializer': keras.initializers.serialize(
                self.gamma_initializer),
            'weight_norm_divisor': self.weight_norm_divisor}
