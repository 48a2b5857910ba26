"""`InputNormalization`: the pipeline's input preprocessing as a Keras layer.

A model that starts with this layer accepts raw uint8 images, so an exported
model needs no separate preprocessing step. Written with `keras.ops` only
(the statistics come from `normprop_tf.data.stats`, which needs no
TensorFlow either), so it runs under any Keras backend.
"""

import keras
from keras import ops
import numpy as np

from normprop_tf.data import stats as stats_lib
from normprop_tf.utils import checks

MODES = ('standardize', 'zca')


@keras.saving.register_keras_serializable(package='normprop_tf')
class InputNormalization(keras.layers.Layer):
  """Global input normalization for NormProp (Arpit et al., ICML 2016).

  NormProp needs every input dimension (every pixel of every channel) to
  have zero mean and unit variance over the training set (docs/method.md).
  This layer applies the training-set statistics that
  `python -m data_prep.prepare` stored in stats.npz, exactly as
  `normprop_tf.data.make_dataset` does in the input pipeline:

  ```
  mode='standardize':  y = (x - mean) / (std + epsilon)
  mode='zca':          g = gcn(x)             # centre, scale to L2 norm 55
                       y = g @ zca_kernel + zca_bias
  ```
  `zca_kernel` and `zca_bias` fold the ZCA matrix P (0.1 added to the
  eigenvalues), the whitening mean and the per-dimension standardization of
  the whitened data: `y = ((g - zca_mean) @ P) / (zca_out_std + epsilon)`.

  During training: the statistics are fixed (non-trainable weights).
  During inference: the same function; there is no train/inference switch.

  Args:
    mode: 'standardize' (default) or 'zca'.
    epsilon: added to the standard deviation in 'standardize' mode.
      Default 1e-3 (authors' code). In 'zca' mode the stored statistics'
      epsilon is already folded into `zca_kernel` and `zca_bias`.
    gcn_scale: target L2 norm of the centred image in 'zca' mode.
      Default 55; `from_stats` sets the stored value.
    **kwargs: base `Layer` arguments (name, dtype, ...).

  Call arguments:
    inputs: images [B, H, W, C], uint8 or float with values in [0, 255].

  Returns:
    Float images of the same shape, in the layer's compute dtype (the math
    itself runs in float32).

  Build it from a prepared data_dir with `InputNormalization.from_stats`.
  A freshly built layer holds the identity statistics (mean 0, std 1).

  Reference:
    Arpit et al., Normalization Propagation, ICML 2016 (arXiv:1603.01431).
  """

  def __init__(self, mode='standardize', epsilon=stats_lib.STD_EPSILON,
               gcn_scale=stats_lib.GCN_SCALE, **kwargs):
    # float32 under any global policy: pixels up to 255 and the ZCA product
    # lose digits in float16; the network casts the result itself.
    kwargs.setdefault('dtype', 'float32')
    super().__init__(**kwargs)
    self.mode = checks.one_of('mode', mode, MODES)
    self.epsilon = checks.positive_number('epsilon', epsilon)
    self.gcn_scale = checks.positive_number('gcn_scale', gcn_scale)
    self.dim = None

  def build(self, input_shape):
    if len(input_shape) < 2 or any(d is None for d in input_shape[1:]):
      raise ValueError('InputNormalization needs a static image shape '
                       f'(e.g. (None, 32, 32, 3)). Received: '
                       f'input_shape={input_shape}')
    self.dim = int(np.prod(input_shape[1:]))
    d = self.dim
    kw = {'trainable': False, 'dtype': 'float32'}
    if self.mode == 'standardize':
      self.mean = self.add_weight(shape=(d,), initializer='zeros',
                                  name='mean', **kw)
      self.std = self.add_weight(shape=(d,), initializer='ones', name='std',
                                 **kw)
    else:
      self.zca_kernel = self.add_weight(shape=(d, d), initializer='identity',
                                        name='zca_kernel', **kw)
      self.zca_bias = self.add_weight(shape=(d,), initializer='zeros',
                                      name='zca_bias', **kw)

  def call(self, inputs):
    x = ops.cast(inputs, 'float32')
    shape = ops.shape(x)
    flat = ops.reshape(x, (-1, self.dim))
    if self.mode == 'standardize':
      out = (flat - self.mean) / (self.std + self.epsilon)
    else:
      centred = flat - ops.mean(flat, axis=1, keepdims=True)
      divisor = ops.sqrt(ops.sum(ops.square(centred), axis=1,
                                 keepdims=True)) / self.gcn_scale
      divisor = ops.where(divisor < stats_lib.GCN_MIN_DIVISOR,
                          ops.ones_like(divisor), divisor)
      out = ops.matmul(centred / divisor, self.zca_kernel) + self.zca_bias
    return ops.cast(ops.reshape(out, shape), self.compute_dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def set_statistics(self, stats):
    """Loads the statistics of a `normprop_tf.data.Stats` into the weights."""
    if not self.built:
      self.build((None, *stats.image_shape))
    if int(np.prod(stats.image_shape)) != self.dim:
      raise ValueError(f'Statistics for images {stats.image_shape} do not fit '
                       f'this layer ({self.dim} dimensions). Received: '
                       f'image_shape={stats.image_shape}')
    if self.mode == 'standardize':
      self.mean.assign(stats.arrays['mean'].astype(np.float32))
      self.std.assign(stats.arrays['std'].astype(np.float32))
      self.epsilon = float(stats.info['stats']['std_epsilon'])
    else:
      scale, kernel, bias = stats.zca_params()
      self.gcn_scale = scale
      self.zca_kernel.assign(kernel)
      self.zca_bias.assign(bias)

  @classmethod
  def from_stats(cls, stats, mode='standardize', **kwargs):
    """Builds the layer from a `Stats` or a prepared data_dir path."""
    if isinstance(stats, str):
      stats = stats_lib.load_stats(stats)
    layer = cls(mode=mode, **kwargs)
    layer.set_statistics(stats)
    return layer

  def get_config(self):
    config = super().get_config()
    config.update({
        'mode': self.mode,
        'epsilon': self.epsilon,
        'gcn_scale': self.gcn_scale,
    })
    return config


def with_input_normalization(model, stats, preprocessing):
  """`model` behind its input preprocessing: a model that takes raw pixels.

  Args:
    model: a model of preprocessed images (e.g. `normprop_tf.models.nin`).
    stats: the training split's `Stats` the preprocessing used.
    preprocessing: 'standardize', 'zca' or 'none' (x / 255). 'minibatch'
      depends on the batch and cannot be part of a model: None is returned.

  Returns:
    A functional model from uint8 (or float) images in [0, 255] to the
    logits, or None for 'minibatch'.
  """
  if preprocessing == 'minibatch':
    return None
  inputs = keras.Input(shape=tuple(stats.image_shape), name='pixels')
  if preprocessing == 'none':
    x = keras.layers.Rescaling(1.0 / 255.0, name='input_scale')(inputs)
  else:
    x = InputNormalization.from_stats(stats, mode=preprocessing,
                                      name='input_normalization')(inputs)
  return keras.Model(inputs, model(x), name=f'{model.name}_on_pixels')
