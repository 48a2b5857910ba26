"""Folds a trained NormProp (or BN) model into standard Keras layers.

`fold(model)` returns an inference model made only of `Conv2D`, `Dense`,
pooling, `Rescaling` and `Activation` layers, with no normprop_tf import
needed to load it. The folding is exact up to float rounding:

- A NormProp hidden unit computes relu(gamma/||W|| W.x + beta) / c2 - c1/c2
  (ReLU is positively homogeneous). gamma / (c2 ||W||) goes into the kernel,
  beta / c2 into the bias, and the constant shift -c1/c2 is carried forward:
  pooling, dropout (off at inference) and global pooling commute with it, and
  the next 1x1 or 'valid' conv or dense layer absorbs it into its bias
  (b -= c * sum of its weights over everything but the output axis).
- A 'same'-padded conv with a kernel larger than 1x1 cannot absorb the shift
  exactly: its zero padding is zero *after* the shift, and the border taps
  would otherwise see -c instead of 0. There a `Rescaling(1, offset=-c)`
  applies the shift first, on the (pooled, smaller) map.
- Layers chained with `input_shift` / `center_output=False` (as `nin()`
  builds them) fold the same way: the shift a layer leaves to its consumer
  and the one it takes are carried like any other, and a `Rescaling` in the
  chain is copied, scaling the shift it passes on.
- BatchNormalization after a conv folds its moving statistics into that
  conv's kernel and bias, so the BN baseline is compared fairly.
- `PoolingCorrection` (an opt-in extension) becomes one `Rescaling` that
  applies its affine map and any pending shift at once.
- `wrappers.WeightNormalization` and `wrappers.NormPropagation` become a
  plain copy of the layer they wrap, with the normalized kernel (and, for
  NormProp, the activation after it and the shift carried on). A shift
  pending in front of one is absorbed into its bias when it is a Dense or a
  1x1/'valid' convolution, and applied by a `Rescaling` otherwise.

Supported: models whose layers form a single chain (every `nin()` variant
and `keras.Sequential` stacks of the same layer types, wrappers included).
"""

import keras
import numpy as np

from normprop_tf import activations
from normprop_tf import layers as np_layers
from normprop_tf import wrappers

# Layers that commute with adding a per-channel constant (AveragePooling2D
# with 'same' padding averages only the valid taps, in TF and JAX alike).
_SHIFT_COMMUTES = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D,
                   keras.layers.MaxPooling3D, keras.layers.AveragePooling1D,
                   keras.layers.AveragePooling2D, keras.layers.AveragePooling3D,
                   keras.layers.GlobalAveragePooling1D,
                   keras.layers.GlobalAveragePooling2D,
                   keras.layers.GlobalAveragePooling3D,
                   keras.layers.GlobalMaxPooling1D,
                   keras.layers.GlobalMaxPooling2D,
                   keras.layers.GlobalMaxPooling3D, keras.layers.Flatten)
_WRAPPERS = (wrappers.WeightNormalization, wrappers.NormPropagation)
# Wrapped layers whose bias can absorb a shift of their input exactly (kernel
# of shape (..., in, out), no zero padding inside the receptive field).
_ABSORBING = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D,
              keras.layers.Conv3D)
_SKIP_AT_INFERENCE = (keras.layers.Dropout, keras.layers.InputLayer)


def _chain(model):
  layers = [l for l in model.layers
            if not isinstance(l, keras.layers.InputLayer)]
  for prev, layer in zip(layers, layers[1:]):
    if len(layer._inbound_nodes) != 1 or (
        layer.input is not prev.output):  # pylint: disable=protected-access
      raise ValueError(
          'fold() supports models whose layers form a single chain. '
          f'Received: a model where {layer.name!r} does not follow '
          f'{prev.name!r}')
  return layers


def _normalized_kernel(layer):
  w = np.asarray(layer.kernel.numpy(), np.float64)
  norm = np.sqrt(np.sum(w**2, axis=tuple(range(w.ndim - 1))) + 1e-12)
  if isinstance(layer, np_layers.NormPropDense | np_layers.NormPropConv2D):
    scale = np.asarray(layer.gamma.numpy(), np.float64) / (
        (layer.weight_norm_divisor or 1.0) * norm)
    return w * scale, np.asarray(layer.beta.numpy(), np.float64)
  scale = np.asarray(layer.g.numpy(), np.float64) / norm
  return w * scale, np.asarray(layer.bias.numpy(), np.float64)


def _linear_parts(layer):
  """(kernel, bias, activation name or None, post (scale, shift) or None)."""
  if isinstance(layer, np_layers.NormPropDense | np_layers.NormPropConv2D):
    w, b = _normalized_kernel(layer)
    if layer.activation is None:
      return w, b, None, None
    if not activations.is_positively_homogeneous(layer.activation):
      raise ValueError(
          'fold() needs a positively homogeneous activation (relu, '
          'leaky_relu, identity) to move 1/c2 into the kernel. Received: '
          f'activation={layer.activation!r} in layer {layer.name!r}')
    m = activations.moments(layer.activation)
    return w / m.std, b / m.std, layer.activation, m.mean / m.std
  if isinstance(layer, np_layers.WeightNormDense | np_layers.WeightNormConv2D):
    w, b = _normalized_kernel(layer)
    return w, b, layer.activation, None
  w = np.asarray(layer.kernel.numpy(), np.float64)
  b = (np.asarray(layer.bias.numpy(), np.float64) if layer.use_bias else
       np.zeros(w.shape[-1]))
  act = keras.activations.serialize(layer.activation)
  return w, b, None if act == 'linear' else act, None


def _conv_geometry(layer):
  if isinstance(layer, keras.layers.Dense | np_layers.NormPropDense |
                np_layers.WeightNormDense):
    return None
  return dict(strides=tuple(layer.strides), padding=layer.padding,
              dilation_rate=tuple(layer.dilation_rate))


def _keras_activation(name):
  if name is None:
    return None
  if name.startswith('leaky_relu:'):
    return keras.layers.LeakyReLU(negative_slope=float(name.split(':')[1]))
  return keras.layers.Activation(name)


def _absorbs_shift(layer):
  """Whether `layer`'s bias can take a constant shift of its input."""
  if not isinstance(layer, _ABSORBING) or not getattr(layer, 'use_bias',
                                                      False):
    return False
  if isinstance(layer, keras.layers.Dense):
    return True
  return layer.padding == 'valid' or all(k == 1 for k in layer.kernel_size)


def _fold_wrapper(layer, x, shift):
  """Folds a wrapper; returns (output, the shift it leaves pending)."""
  plain, weights, activation, post_shift = layer.plain_layer()
  if shift and _absorbs_shift(layer.layer):
    kernel = getattr(layer.layer, wrappers.kernel_attribute(layer.layer))
    index = [v is kernel for v in layer.layer.weights].index(True)
    bias = [v is layer.layer.bias for v in layer.layer.weights].index(True)
    w = weights[index].astype(np.float64)
    weights[bias] = (weights[bias] - shift * w.sum(
        axis=tuple(range(w.ndim - 1)))).astype(np.float32)
  elif shift:
    x = keras.layers.Rescaling(1.0, offset=-shift,
                               name=f'{layer.name}_shift')(x)
  x = plain(x)
  plain.set_weights(weights)
  if activation is not None:
    x = _keras_activation(activation)(x)
  return x, post_shift or 0.0


def _fold_rescaling(layer, x, shift):
  """y = a x + o: the copy passes a pending shift on, scaled by a."""
  scale = np.asarray(layer.scale, np.float64)
  if shift and scale.ndim:
    raise ValueError(
        'fold() carries a pending shift through a Rescaling only with a '
        f'scalar scale. Received: layer {layer.name!r} with scale '
        f'{layer.scale!r}')
  return type(layer).from_config(layer.get_config())(x), shift * float(scale)


def _fold_pooling_correction(layer, x, shift):
  """real = (x - shift - mean) / std: one per-channel affine map."""
  return keras.layers.Rescaling(1.0 / layer.std,
                                offset=-(shift + layer.mean) / layer.std,
                                name=layer.name)(x), 0.0


def _fold_activation(layer, x, shift):
  if shift:
    x = keras.layers.Rescaling(1.0, offset=-shift,
                               name=f'{layer.name}_shift')(x)
  return type(layer).from_config(layer.get_config())(x), 0.0


def _with_batch_norm(w, b, bn):
  """Kernel and bias with a following BN's moving statistics folded in."""
  gamma = bn.gamma.numpy() if bn.scale else 1.0
  beta = bn.beta.numpy() if bn.center else 0.0
  s = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
  return w * s, (b - bn.moving_mean.numpy()) * s + beta


def _fold_linear(layer, bn, x, shift):
  """A Conv2D/Dense (NormProp, weight-norm or plain, then `bn` if not
  None) as a plain one; returns (output, the shift it leaves pending)."""
  w, b, act, post_shift = _linear_parts(layer)
  geometry = _conv_geometry(layer)
  # A layer with input_shift s computes its function of (its input - s).
  shift = shift + getattr(layer, 'input_shift', 0.0)
  if bn is not None:
    w, b = _with_batch_norm(w, b, bn)
  if shift:
    padded = geometry is not None and geometry['padding'] == 'same' and (
        w.shape[0] > 1 or w.shape[1] > 1)
    if padded:
      x = keras.layers.Rescaling(1.0, offset=-shift,
                                 name=f'{layer.name}_shift')(x)
    else:
      b = b - shift * w.sum(axis=tuple(range(w.ndim - 1)))
  if geometry is None:
    new = keras.layers.Dense(w.shape[-1], name=layer.name)
  else:
    new = keras.layers.Conv2D(w.shape[-1], w.shape[:2], name=layer.name,
                              **geometry)
  x = new(x)
  new.set_weights([w.astype('float32'), b.astype('float32')])
  if act is not None:
    x = _keras_activation(act)(x)
  # Centred, the layer's output is the folded one minus c1/c2; with
  # center_output=False it is the folded one.
  return x, ((post_shift or 0.0) if getattr(layer, 'center_output', True)
             else 0.0)


_LINEAR = (keras.layers.Conv2D, keras.layers.Dense, np_layers.NormPropConv2D,
           np_layers.NormPropDense, np_layers.WeightNormConv2D,
           np_layers.WeightNormDense)


def _copy(layer, x, shift):
  return type(layer).from_config(layer.get_config())(x), shift


# (layer types, fold function(layer, x, shift) -> (x, shift)), in order.
_FOLDERS = (
    (_SHIFT_COMMUTES, _copy),
    (keras.layers.Rescaling, _fold_rescaling),
    (np_layers.PoolingCorrection, _fold_pooling_correction),
    (_WRAPPERS, _fold_wrapper),
    (keras.layers.Activation | keras.layers.ReLU, _fold_activation),
)


def fold(model, name=None):
  """Returns a standard-Keras-layer copy of `model` for inference.

  Args:
    model: a trained chain model (e.g. from `normprop_tf.models.nin`) of
      NormProp, weight-norm, Conv2D/Dense, BatchNormalization, activation,
      pooling and dropout layers.
    name: name of the folded model; defaults to f'{model.name}_folded'.

  Returns:
    A functional `keras.Model` whose output equals `model(x, training=False)`
    up to float32 rounding.

  Raises:
    ValueError: for layers or graphs it cannot fold, naming them.
  """
  chain = _chain(model)
  inputs = keras.Input(model.inputs[0].shape[1:], name='image')
  x, shift, i = inputs, 0.0, 0  # The real activation is `x - shift`.
  while i < len(chain):
    layer = chain[i]
    i += 1
    if isinstance(layer, _SKIP_AT_INFERENCE):
      continue
    folder = next((f for types, f in _FOLDERS if isinstance(layer, types)),
                  None)
    if folder is not None:
      x, shift = folder(layer, x, shift)
      continue
    if not isinstance(layer, _LINEAR):
      raise ValueError(f'fold() cannot fold layer {layer.name!r} of type '
                       f'{type(layer).__name__}. Received: {layer!r}')
    bn = None
    if i < len(chain) and isinstance(chain[i],
                                     keras.layers.BatchNormalization):
      bn, i = chain[i], i + 1
    x, shift = _fold_linear(layer, bn, x, shift)
  if shift:
    x = keras.layers.Rescaling(1.0, offset=-shift, name='output_shift')(x)
  return keras.Model(inputs, x, name=name or f'{model.name}_folded')
