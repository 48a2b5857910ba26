"""Normalization Propagation layers (Arpit et al., ICML 2016) and the
weight-normalization baseline (Salimans & Kingma, 2016), for Keras 3.

Written with `keras.ops` only, so they run under any Keras backend. The math
lives in `normprop_tf.functional`; these classes own the weights, validate
their arguments and serialize.
"""

import math

import keras

from normprop_tf import activations
from normprop_tf import functional
from normprop_tf import initializers
from normprop_tf import pooling
from normprop_tf.utils import checks

_PACKAGE = 'normprop_tf'


def _check_padding(padding):
  if not isinstance(padding, str) or padding.lower() not in ('same', 'valid'):
    raise checks.ArgumentError(
        f"`padding` must be 'same' or 'valid'. Received: padding={padding!r}")
  return padding.lower()


def _check_divisor(value):
  if value is None:
    return None
  if not (checks.is_number(value) and math.isfinite(value) and value > 0):
    checks.fail('weight_norm_divisor', value, 'must be None or a positive '
                'finite number (the authors use 1.21)')
  return float(value)


def _check_initializer(name, value):
  try:
    return keras.initializers.get(value)
  except (ValueError, TypeError) as e:
    raise checks.ArgumentError(
        f'`{name}` is not a valid initializer ({e}). '
        f'Received: {name}={value!r}') from None


class _WeightNormalizedLayer(keras.layers.Layer):
  """Shared weights, validation and config of the four layers below.

  Subclasses set `_scale_name`/`_shift_name` and implement
  `_kernel_shape(in_dim)`, `_linear()` and `_apply(...)`.
  """

  _scale_name = 'gamma'
  _shift_name = 'beta'
  _min_ndim = 2

  def __init__(self, units, activation, scale_initializer, shift_initializer,
               kernel_initializer, **kwargs):
    super().__init__(**kwargs)
    self._units = units
    self.activation = activation
    self.scale_initializer = scale_initializer
    self.shift_initializer = shift_initializer
    self.kernel_initializer = _check_initializer(
        'kernel_initializer',
        initializers.UnitNormOrthogonal()
        if kernel_initializer is None else kernel_initializer)
    self.input_spec = keras.layers.InputSpec(min_ndim=self._min_ndim)

  def build(self, input_shape):
    in_dim = input_shape[-1]
    if in_dim is None:
      raise checks.ArgumentError(
          f'{type(self).__name__} needs a known last (channel) dimension. '
          f'Received: input_shape={input_shape}')
    # autocast=False: under mixed precision the norm is computed from the
    # float32 variables; `functional` casts the scaled kernel afterwards.
    self.kernel = self.add_weight(
        name='kernel', shape=self._kernel_shape(in_dim),
        initializer=self.kernel_initializer, autocast=False)
    scale = self.add_weight(
        name=self._scale_name, shape=(self._units,),
        initializer=self.scale_initializer, autocast=False)
    shift = self.add_weight(
        name=self._shift_name, shape=(self._units,),
        initializer=self.shift_initializer, autocast=False)
    setattr(self, self._scale_name, scale)
    setattr(self, self._shift_name, shift)
    self.input_spec = keras.layers.InputSpec(
        min_ndim=self._min_ndim, axes={-1: in_dim})

  def call(self, inputs, return_intermediates=False):
    return self._apply(inputs, self._linear(), bool(return_intermediates))

  def compute_output_spec(self, inputs, return_intermediates=False):
    # From the shape alone: otherwise Keras traces `call` symbolically for
    # each layer of a functional model, most of the time it takes to build a
    # NIN (0.5 of 0.6 s at width 0.05 on TensorFlow, measured).
    self._check_input_shape(inputs.shape)
    def spec():
      return keras.KerasTensor(self.compute_output_shape(inputs.shape),
                               dtype=self.compute_dtype)
    if return_intermediates:
      return {key: spec() for key in functional.INTERMEDIATES}
    return spec()

  def _check_input_shape(self, shape):
    """Raises what `call` would raise for inputs of this static shape."""
    del shape  # Nothing beyond the input spec, here.

  def _common_config(self):
    return {
        'activation': self.activation,
        'kernel_initializer': keras.initializers.serialize(
            self.kernel_initializer),
    }


class _NormPropMixin:
  """Arguments and math shared by NormPropDense and NormPropConv2D."""

  def _init_normprop(self, activation, gamma_initializer, beta_initializer,
                     weight_norm_divisor):
    if activation is not None:
      activation = activations.canonical_name(activation)
    divisor = _check_divisor(weight_norm_divisor)
    if gamma_initializer is None:
      # With the authors' fixed divisor their gamma starts at 1; otherwise
      # the divisor is folded into gamma's init (1/1.21 for ReLU).
      value = 1.0 if divisor is not None or activation is None else (
          activations.default_gamma(activation))
      gamma_initializer = keras.initializers.Constant(value)
    return (activation, divisor,
            _check_initializer('gamma_initializer', gamma_initializer),
            _check_initializer('beta_initializer', beta_initializer))

  def _init_shifts(self, input_shift, center_output):
    """Checks and sets the two options that move `- c1/c2` between layers."""
    if not (checks.is_number(input_shift) and math.isfinite(input_shift)):
      checks.fail('input_shift', input_shift, 'must be a finite number')
    checks.one_of('center_output', center_output, (True, False))
    if not center_output and (
        self.activation is None or
        not activations.is_positively_homogeneous(self.activation)):
      checks.fail('center_output', center_output,
                  'can be False only with a positively homogeneous '
                  f'activation (relu, leaky_relu, identity); this layer has '
                  f'activation={self.activation!r}')
    self.input_shift = float(input_shift)
    self.center_output = center_output

  @property
  def output_shift(self):
    """What this layer's output exceeds its NormProp output by: c1/c2 when
    `center_output=False` (for the consumer's `input_shift`), else 0."""
    if self.center_output:
      return 0.0
    m = activations.moments(self.activation)
    return m.mean / m.std

  def _check_input_shape(self, shape):
    if self.input_shift and functional.absorbs_shift(shape, self.kernel.shape):
      self._shift_pad()  # Needs a known height and width under 'same'.

  def _apply(self, inputs, linear, return_intermediates):
    shift = self.input_shift
    if shift and functional.absorbs_shift(inputs.shape, self.kernel.shape):
      pad = self._shift_pad()
      linear = functional.shifted_linear(self._linear(pad is not None), shift,
                                         pad)
    elif shift:
      inputs, shift = inputs - shift, 0.0  # One pass over a small input.
    return functional.normprop(
        inputs, self.kernel, self.gamma, self.beta, linear,
        activation=self.activation,
        divisor=self.weight_norm_divisor or 1.0,
        compute_dtype=self.compute_dtype,
        return_intermediates=return_intermediates,
        input_shift=shift, center_output=self.center_output)

  def _normprop_config(self):
    return {
        'gamma_initializer': keras.initializers.serialize(
            self.scale_initializer),
        'beta_initializer': keras.initializers.serialize(
            self.shift_initializer),
        'weight_norm_divisor': self.weight_norm_divisor,
        'input_shift': self.input_shift,
        'center_output': self.center_output,
    }


class _WeightNormMixin:
  """Arguments and math shared by WeightNormDense and WeightNormConv2D."""

  _scale_name = 'g'
  _shift_name = 'bias'

  def _init_weight_norm(self, activation, g_initializer, bias_initializer):
    try:
      keras.activations.get(activation)
    except (ValueError, TypeError):
      raise checks.ArgumentError(
          '`activation` must be a Keras activation name or None. '
          f'Received: activation={activation!r}') from None
    return (activation, _check_initializer('g_initializer', g_initializer),
            _check_initializer('bias_initializer', bias_initializer))

  def _apply(self, inputs, linear, return_intermediates):
    return functional.weight_norm(
        inputs, self.kernel, self.g, self.bias, linear,
        activation=self.activation, compute_dtype=self.compute_dtype,
        return_intermediates=return_intermediates)

  def _weight_norm_config(self):
    return {
        'g_initializer': keras.initializers.serialize(self.scale_initializer),
        'bias_initializer': keras.initializers.serialize(
            self.shift_initializer),
    }


class _DenseMixin:

  def _kernel_shape(self, in_dim):
    return (in_dim, self.units)

  def compute_output_shape(self, input_shape):
    return (*input_shape[:-1], self.units)

  def _linear(self, shift_padded=False):
    del shift_padded  # A matmul pads nothing.
    return functional.dense

  def _shift_pad(self):
    return None  # A matmul takes an input shift into the bias as it is.


class _Conv2DMixin:
  _min_ndim = 4

  def _init_conv(self, kernel_size, strides, padding, dilation_rate):
    self.kernel_size = checks.int_tuple('kernel_size', kernel_size, 2)
    self.strides = checks.int_tuple('strides', strides, 2)
    self.padding = _check_padding(padding)
    self.dilation_rate = checks.int_tuple('dilation_rate', dilation_rate, 2)

  def build(self, input_shape):
    if len(input_shape) != 4:
      raise checks.ArgumentError(
          f'{type(self).__name__} expects channels-last inputs of rank 4 '
          f'(batch, height, width, channels). Received: '
          f'input_shape={input_shape}')
    self._spatial = tuple(input_shape[1:3])
    super().build(input_shape)

  def _kernel_shape(self, in_dim):
    return (*self.kernel_size, in_dim, self.filters)

  def compute_output_shape(self, input_shape):
    spatial = (functional.conv_output_size(n, k, s, self.padding, d)
               for n, k, s, d in zip(input_shape[1:3], self.kernel_size,
                                     self.strides, self.dilation_rate))
    return (input_shape[0], *spatial, self.filters)

  def _pads_with_zeros(self):
    """Whether 'same' padding adds zeros inside some receptive field."""
    return self.padding == 'same' and any(k > 1 for k in self.kernel_size)

  def _shift_pad(self):
    """`pad(x, s)` for an input shift under zero padding (`functional.
    shifted_linear`), or None when the convolution needs none."""
    if not getattr(self, 'input_shift', 0.0) or not self._pads_with_zeros():
      return None
    spatial = getattr(self, '_spatial', (None, None))
    if None in spatial:
      raise checks.ArgumentError(
          f'{type(self).__name__} with input_shift and padding=\'same\' '
          f'needs a known input height and width. Received: '
          f'spatial shape {spatial}')
    return functional.same_pad_fn(spatial, self.kernel_size, self.strides,
                                  self.dilation_rate)

  def _linear(self, shift_padded=False):
    """The convolution; 'valid' when `_shift_pad` has padded its input."""
    padding = 'valid' if shift_padded else self.padding
    return functional.conv2d_fn(self.strides, padding, self.dilation_rate)

  def _conv_config(self):
    return {
        'filters': self.filters,
        'kernel_size': self.kernel_size,
        'strides': self.strides,
        'padding': self.padding,
        'dilation_rate': self.dilation_rate,
    }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NormPropDense(_NormPropMixin, _DenseMixin, _WeightNormalizedLayer):
  """Fully connected Normalization Propagation layer (Arpit et al., 2016).

  Normalizes by the weight norm and the known moments of f(z), z ~ N(0, 1),
  instead of by batch statistics:

  ```
  u = gamma * (x @ W) / norm(W, axis=0) + beta
  output = (f(u) - c1) / c2      # c1 = E f(z), c2 = Std f(z)
  ```

  For ReLU, c1 = sqrt(1 / (2 pi)) and c2 = sqrt((1 - 1/pi) / 2). With
  `activation=None` the layer is the classifier form `u` (no f, no c1/c2).

  During training: the output is computed as above; no batch statistics are
  used, so any batch size works, including 1.

  During inference: the same computation. There is no moving average and
  no training/inference switch, so an example's output never depends on the
  rest of its batch.

  Gradients flow through the weight norm, as in weight normalization.

  Args:
    units: positive int, the number of output units.
    activation: 'relu' (default), any name in
      `normprop_tf.activations.SUPPORTED` ('leaky_relu:0.1' for a slope), or
      None for the classifier form.
    gamma_initializer: initializer of the per-unit scale gamma. Defaults to
      1/1.21 for ReLU (the paper; it keeps each layer's Jacobian near
      unit RMS singular value), the Jacobian-preserving gamma0 for other
      activations, and 1.0 when `activation=None` or when
      `weight_norm_divisor` is set.
    beta_initializer: initializer of the per-unit shift beta (there is no
      separate bias). Defaults to 'zeros'.
    kernel_initializer: defaults to `UnitNormOrthogonal`, which gives every
      unit's weights unit L2 norm, so the effective learning rate
      lr / ||W_i||^2 is the same in every layer.
    weight_norm_divisor: None, or a fixed divisor of ||W_i||. The authors'
      code uses 1.21 with gamma initialized to 1, which is the same function
      as the default gamma of 1/1.21.
    input_shift: a constant s by which the input exceeds the real one: the
      layer computes its function of `inputs - s`, exactly. When the input
      is large against the kernel (`functional.absorbs_shift`), s * sum(W_i)
      is taken off the bias instead of a pass over the input. Defaults to 0.
    center_output: True (default): the output as above. False (positively
      homogeneous activations only): f(u) / c2 without the `- c1/c2`, which
      `output_shift` then gives, so that the next layer takes it with
      `input_shift=layer.output_shift` and no pass over the activations is
      spent on it. `models.nin` chains its layers this way.
    **kwargs: base layer arguments (`name`, `dtype`, ...).

  Input shape:
    (..., input_dim).

  Output shape:
    (..., units).

  Call arguments:
    inputs: the input tensor.
    return_intermediates: if True, return a dict with 'projection'
      (x @ W / ||W||, assumed N(0, 1)), 'preactivation' (u) and 'output'.

  Reference:
    - [Arpit et al., 2016](https://arxiv.org/abs/1603.01431)
  """

  def __init__(self, units, activation='relu', gamma_initializer=None,
               beta_initializer='zeros', kernel_initializer=None,
               weight_norm_divisor=None, input_shift=0.0, center_output=True,
               **kwargs):
    units = checks.positive_int('units', units)
    activation, divisor, gamma_init, beta_init = self._init_normprop(
        activation, gamma_initializer, beta_initializer, weight_norm_divisor)
    super().__init__(units, activation, gamma_init, beta_init,
                     kernel_initializer, **kwargs)
    self.units = units
    self.weight_norm_divisor = divisor
    self._init_shifts(input_shift, center_output)

  def get_config(self):
    return {**super().get_config(), 'units': self.units,
            **self._common_config(), **self._normprop_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NormPropConv2D(_NormPropMixin, _Conv2DMixin, _WeightNormalizedLayer):
  """2-D convolutional Normalization Propagation layer (Arpit et al., 2016).

  Every output channel is a unit and every receptive-field patch plays the
  role of x:

  ```
  u = gamma * conv(x, W) / norm(W, axis=(0, 1, 2)) + beta
  output = (f(u) - c1) / c2
  ```

  gamma and beta are per channel. Zero ('same') padding slightly lowers the
  variance at the borders; as in the paper, this is not corrected.

  During training: as above, no batch statistics; works at batch size 1.

  During inference: identical to training.

  Args:
    filters: positive int, the number of output channels.
    kernel_size: int or pair of ints.
    strides: int or pair of ints. Defaults to 1.
    padding: 'same' (default) or 'valid'.
    activation: as in `NormPropDense`; None gives the classifier form.
    gamma_initializer: as in `NormPropDense`.
    beta_initializer: defaults to 'zeros'.
    kernel_initializer: defaults to `UnitNormOrthogonal`.
    weight_norm_divisor: as in `NormPropDense`.
    dilation_rate: int or pair of ints. Defaults to 1.
    input_shift: as in `NormPropDense`. With 'same' padding and a kernel
      larger than 1x1 the input is padded with s instead of zeros (the
      borders stay exact), which needs a known height and width.
    center_output: as in `NormPropDense`.
    **kwargs: base layer arguments.

  Input shape:
    (batch, height, width, channels), channels last.

  Output shape:
    (batch, new_height, new_width, filters).

  Call arguments:
    inputs: the input tensor.
    return_intermediates: as in `NormPropDense`.

  Reference:
    - [Arpit et al., 2016](https://arxiv.org/abs/1603.01431)
  """

  def __init__(self, filters, kernel_size, strides=1, padding='same',
               activation='relu', gamma_initializer=None,
               beta_initializer='zeros', kernel_initializer=None,
               weight_norm_divisor=None, dilation_rate=1, input_shift=0.0,
               center_output=True, **kwargs):
    filters = checks.positive_int('filters', filters)
    activation, divisor, gamma_init, beta_init = self._init_normprop(
        activation, gamma_initializer, beta_initializer, weight_norm_divisor)
    super().__init__(filters, activation, gamma_init, beta_init,
                     kernel_initializer, **kwargs)
    self.filters = filters
    self.weight_norm_divisor = divisor
    self._init_conv(kernel_size, strides, padding, dilation_rate)
    self._init_shifts(input_shift, center_output)

  def get_config(self):
    return {**super().get_config(), **self._conv_config(),
            **self._common_config(), **self._normprop_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WeightNormDense(_WeightNormMixin, _DenseMixin, _WeightNormalizedLayer):
  """Weight-normalized Dense layer (Salimans & Kingma, 2016).

  ```
  output = f(g * (x @ v) / norm(v, axis=0) + bias)
  ```

  The baseline NormProp builds on: the same reparameterization without the
  (f(u) - c1) / c2 re-normalization.

  During training and inference: the same computation.

  Args:
    units: positive int.
    activation: a Keras activation name or None. Defaults to 'relu'.
    g_initializer: defaults to 'ones'.
    bias_initializer: defaults to 'zeros'.
    kernel_initializer: defaults to `UnitNormOrthogonal`.
    **kwargs: base layer arguments.

  Call arguments:
    inputs: the input tensor.
    return_intermediates: as in `NormPropDense`.

  Reference:
    - [Salimans & Kingma, 2016](https://arxiv.org/abs/1602.07868)
  """

  def __init__(self, units, activation='relu', g_initializer='ones',
               bias_initializer='zeros', kernel_initializer=None, **kwargs):
    units = checks.positive_int('units', units)
    activation, g_init, bias_init = self._init_weight_norm(
        activation, g_initializer, bias_initializer)
    super().__init__(units, activation, g_init, bias_init, kernel_initializer,
                     **kwargs)
    self.units = units

  def get_config(self):
    return {**super().get_config(), 'units': self.units,
            **self._common_config(), **self._weight_norm_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WeightNormConv2D(_WeightNormMixin, _Conv2DMixin,
                       _WeightNormalizedLayer):
  """Weight-normalized 2-D convolution (Salimans & Kingma, 2016).

  ```
  output = f(g * conv(x, v) / norm(v, axis=(0, 1, 2)) + bias)
  ```

  During training and inference: the same computation.

  Args:
    filters: positive int.
    kernel_size: int or pair of ints.
    strides: int or pair of ints. Defaults to 1.
    padding: 'same' (default) or 'valid'.
    activation: a Keras activation name or None. Defaults to 'relu'.
    g_initializer: defaults to 'ones'.
    bias_initializer: defaults to 'zeros'.
    kernel_initializer: defaults to `UnitNormOrthogonal`.
    dilation_rate: int or pair of ints. Defaults to 1.
    **kwargs: base layer arguments.

  Call arguments:
    inputs: the input tensor.
    return_intermediates: as in `NormPropDense`.

  Reference:
    - [Salimans & Kingma, 2016](https://arxiv.org/abs/1602.07868)
  """

  def __init__(self, filters, kernel_size, strides=1, padding='same',
               activation='relu', g_initializer='ones',
               bias_initializer='zeros', kernel_initializer=None,
               dilation_rate=1, **kwargs):
    filters = checks.positive_int('filters', filters)
    activation, g_init, bias_init = self._init_weight_norm(
        activation, g_initializer, bias_initializer)
    super().__init__(filters, activation, g_init, bias_init,
                     kernel_initializer, **kwargs)
    self.filters = filters
    self._init_conv(kernel_size, strides, padding, dilation_rate)

  def get_config(self):
    return {**super().get_config(), **self._conv_config(),
            **self._common_config(), **self._weight_norm_config()}




@keras.saving.register_keras_serializable(package=_PACKAGE)
class PoolingCorrection(keras.layers.Layer):
  """Restores zero mean and unit variance after pooling NormProp outputs.

  An extension, not part of NormProp (Arpit et al., 2016), whose pooling
  layers apply no correction. Placed after a max or average pooling of
  NormProp outputs, it computes

  ```
  output = (inputs - mean) / std
  ```

  with data-independent constants from `normprop_tf.pooling.pooled_moments`:
  the moments of a pooled output when the window's pre-activations are
  standard normal with pairwise correlation `correlation` (0: independent).
  For ReLU and a 3x3 window: max pooling has mean 1.861 and std 1.023 at
  correlation 0; average pooling has mean 0 and std 1/3.

  During training and inference: the same affine map; no statistics are
  collected. `normprop_tf.export.fold` folds it into a per-channel affine.

  Args:
    pool: 'max' or 'avg', the pooling it follows.
    pool_size: the pooling window, an int or a pair. Defaults to 3.
    activation: the activation of the NormProp layer before the pool.
      Defaults to 'relu'. Max pooling needs a nondecreasing activation.
    correlation: the assumed correlation inside a window, in [0, 0.95].
      Defaults to 0.
    **kwargs: base layer arguments.

  Call arguments:
    inputs: the pooled tensor, any shape.

  Reference:
    - [Arpit et al., 2016](https://arxiv.org/abs/1603.01431) (the uncorrected
      method); docs/method.md, "Convolutions and pooling".
  """

  def __init__(self, pool='max', pool_size=3, activation='relu',
               correlation=0.0, **kwargs):
    super().__init__(**kwargs)
    self.pool_size = checks.int_tuple('pool_size', pool_size, 2)
    self.pool = pool
    self.activation = activations.canonical_name(activation)
    self.correlation = correlation
    moments = pooling.pooled_moments(
        self.activation, pool, self.pool_size[0] * self.pool_size[1],
        correlation)
    self.mean, self.std = moments.mean, moments.std

  def call(self, inputs):
    return (inputs - self.mean) / self.std

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), 'pool': self.pool,
            'pool_size': self.pool_size, 'activation': self.activation,
            'correlation': self.correlation}


__all__ = ['NormPropDense', 'NormPropConv2D', 'WeightNormDense',
           'WeightNormConv2D', 'PoolingCorrection']
