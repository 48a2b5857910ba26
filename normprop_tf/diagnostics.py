"""Hidden-layer statistics and NormProp's estimate gap, for any Keras model.

What the paper's Figure 2 looks at: for every normalized unit of a model,
the true statistics of what the method normalizes, on a fixed batch, against
the statistics the method assumes at inference.

`probe_model(model)` finds the units of any functional or Sequential model:
- NormProp and weight-norm layers with an activation (`normprop_tf.layers`,
  and the `normprop_tf.wrappers` around any layer with a kernel):
  'normalized' is W_i . x / ||W_i||, which NormProp assumes is N(0, 1);
- `keras.layers.BatchNormalization`: 'normalized' is its input standardized
  with the moving statistics, (x - moving_mean) / sqrt(moving_var + eps),
  which BN assumes is (0, 1) at inference;
- the plain convs of `models.nin(norm='plain')` (named convI), for
  comparison; they make no estimate.
Each unit also gives 'preactivation' (the nonlinearity's input) and
'output'. A unit is named after its layer; a BN layer `<name>_bn` after a
layer `<name>` (the NIN convention) is named `<name>`.

`statistics` (keras.ops, so it runs inside a `tf.function` or under JAX)
and `summarize` (NumPy) turn the probe's outputs into scalars with one
vocabulary for every method:

    stats/<unit>/<part>/mean, stats/<unit>/<part>/std
        per-channel moments over batch and space, averaged over channels;
    ics/<unit>/gap_mean = mean_c |E z_c|, ics/<unit>/gap_std =
        mean_c |Std z_c - 1|, z the 'normalized' quantity (NormProp and BN);
    ics/<unit>/output_gap_mean, output_gap_std: the same for NormProp's
        output, which its post-normalization assumes is (0, 1);
    ics/mean_over_layers/<gap>: each gap averaged over the units.

and histograms `stats/<unit>/<part>` (a strided sample of the values) and
`ics/<unit>/channel_mean`, `ics/<unit>/channel_std`.
"""

import keras
from keras import ops
import numpy as np

from normprop_tf import layers as np_layers
from normprop_tf import wrappers

PARTS = ('normalized', 'preactivation', 'output')
_NORMPROP = (np_layers.NormPropConv2D, np_layers.NormPropDense,
             wrappers.NormPropagation)
_WEIGHTNORM = (np_layers.WeightNormConv2D, np_layers.WeightNormDense,
               wrappers.WeightNormalization)
_ACTIVATIONS = (keras.layers.Activation, keras.layers.ReLU,
                keras.layers.LeakyReLU, keras.layers.ELU)


class _Intermediates(keras.layers.Layer):
  """Calls a NormProp/weight-norm layer with `return_intermediates=True`.

  A second call of the same layer with a different output structure breaks
  Keras 3.15's functional connectivity check (it sizes every node's outputs
  from node 0), so the probe wraps the layer in an operation of its own. The
  weights stay shared; the probe is not meant to be saved.
  """

  def __init__(self, layer):
    super().__init__(name=f'{layer.name}_intermediates',
                     dtype=layer.dtype_policy)
    self.inner = layer

  def call(self, inputs):
    return self.inner(inputs, return_intermediates=True)

  def compute_output_spec(self, inputs):
    # Given, not inferred: JAX's shape inference cannot trace the inner
    # layer's variables from inside another layer's call.
    spec = self.inner.compute_output_spec(inputs)
    return {key: keras.KerasTensor(spec.shape, spec.dtype)
            for key in ('projection', 'preactivation', 'output')}


class _MovingStandardize(keras.layers.Layer):
  """(x - moving_mean) / sqrt(moving_variance + epsilon) of a BN layer."""

  def __init__(self, bn):
    super().__init__(name=f'{bn.name}_standardized', dtype=bn.dtype_policy)
    self.bn = bn

  def call(self, inputs):
    x = ops.cast(inputs, 'float32')
    return (x - self.bn.moving_mean) / ops.sqrt(self.bn.moving_variance +
                                                self.bn.epsilon)


def _activation(layer):
  """A NormProp or weight-norm layer's activation (a wrapper's or its inner
  layer's), None for the classifier form."""
  if isinstance(layer, wrappers.WeightNormalization):
    act = getattr(layer.layer, 'activation', None)
    name = None if act is None else keras.activations.serialize(act)
    return None if name in (None, 'linear') else name
  return layer.activation


def _kernel(layer):
  """The kernel whose per-unit norms a layer's unit has, or None."""
  if isinstance(layer, wrappers.WeightNormalization |
                wrappers.NormPropagation):
    return layer.v
  return getattr(layer, 'kernel', None)


def _producer(model, layer):
  """The layer whose output `layer` consumes, or None."""
  for other in model.layers:
    if other is not layer and other.output is layer.input:
      return other
  return None


def _follower(model, layer):
  """The activation layer that consumes `layer`'s output, or None."""
  for other in model.layers:
    if isinstance(other, _ACTIVATIONS) and other.input is layer.output:
      return other
  return None


def units(model):
  """[(unit name, kind, layer)] of `model`'s normalized units, in order.

  kind is 'normprop', 'weightnorm', 'batchnorm' or 'plain'.
  """
  found = []
  names = {l.name for l in model.layers}
  for layer in model.layers:
    if isinstance(layer, _NORMPROP + _WEIGHTNORM):
      if _activation(layer) is not None:
        kind = 'normprop' if isinstance(layer, _NORMPROP) else 'weightnorm'
        found.append((layer.name, kind, layer))
    elif isinstance(layer, keras.layers.BatchNormalization):
      name = layer.name[:-3] if layer.name.endswith('_bn') and (
          layer.name[:-3] in names) else layer.name
      found.append((name, 'batchnorm', layer))
    elif (isinstance(layer, keras.layers.Conv2D) and
          f'{layer.name}_act' in names and f'{layer.name}_bn' not in names):
      found.append((layer.name, 'plain', layer))  # nin(norm='plain').
  return found


def probe_model(model):
  """A model sharing `model`'s weights that returns every unit's parts.

  Args:
    model: a functional or Sequential Keras model (e.g. `models.nin`, or
      one of the user's own built from normprop_tf and Keras layers).

  Returns:
    A `keras.Model` from the same input to {'<unit>/<part>': tensor} and
    'logits'. Its attribute `unit_kinds` is {unit: kind}.
  """
  outputs, kinds = {}, {}
  for name, kind, layer in units(model):
    kinds[name] = kind
    if kind in ('normprop', 'weightnorm'):
      parts = _Intermediates(layer)(layer.input)
      outputs[f'{name}/normalized'] = parts['projection']
      outputs[f'{name}/preactivation'] = parts['preactivation']
      outputs[f'{name}/output'] = parts['output']
      continue
    act = _follower(model, layer)
    if kind == 'batchnorm':
      outputs[f'{name}/normalized'] = _MovingStandardize(layer)(layer.input)
    else:
      outputs[f'{name}/normalized'] = layer.output
    outputs[f'{name}/preactivation'] = layer.output
    outputs[f'{name}/output'] = act.output if act is not None else (
        layer.output)
  outputs['logits'] = model.outputs[0]
  inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
  probe = keras.Model(inputs, outputs, name=f'{model.name}_probe')
  probe.unit_kinds = kinds
  return probe


def statistics(outputs, histogram_values=4096):
  """Per-channel moments and a strided sample of each part (keras.ops).

  Args:
    outputs: the probe's outputs on a batch.
    histogram_values: at most this many sampled values per part.
  """
  result = {}
  for key, value in outputs.items():
    if key == 'logits':
      continue
    x = ops.cast(value, 'float32')
    axes = tuple(range(len(x.shape) - 1))
    result[f'{key}/channel_mean'] = ops.mean(x, axis=axes)
    result[f'{key}/channel_std'] = ops.sqrt(ops.var(x, axis=axes))
    flat = ops.reshape(x, (-1,))
    size = int(np.prod(x.shape))
    stride = max(1, -(-size // histogram_values))  # Ceiling.
    result[f'{key}/sample'] = flat[::stride]
  return result


def _gaps(unit, channel_mean, channel_std, prefix=''):
  return {f'ics/{unit}/{prefix}gap_mean': float(np.mean(np.abs(channel_mean))),
          f'ics/{unit}/{prefix}gap_std': float(np.mean(np.abs(
              channel_std - 1)))}


def summarize(stats, unit_kinds):
  """({scalar tag: float}, {histogram tag: array}) from `statistics`."""
  stats = {k: np.asarray(keras.ops.convert_to_numpy(v), np.float64)
           for k, v in stats.items()}
  scalars, histograms, by_gap = {}, {}, {}
  for unit, kind in unit_kinds.items():
    for part in PARTS:
      key = f'{unit}/{part}'
      scalars[f'stats/{key}/mean'] = float(np.mean(stats[f'{key}/channel_mean']))
      scalars[f'stats/{key}/std'] = float(np.mean(stats[f'{key}/channel_std']))
      histograms[f'stats/{key}'] = stats[f'{key}/sample']
    for moment in ('channel_mean', 'channel_std'):
      histograms[f'ics/{unit}/{moment}'] = stats[f'{unit}/normalized/{moment}']
    gaps = {}
    if kind in ('normprop', 'batchnorm'):
      gaps.update(_gaps(unit, stats[f'{unit}/normalized/channel_mean'],
                        stats[f'{unit}/normalized/channel_std']))
    if kind == 'normprop':
      gaps.update(_gaps(unit, stats[f'{unit}/output/channel_mean'],
                        stats[f'{unit}/output/channel_std'], 'output_'))
    scalars.update(gaps)
    for tag, value in gaps.items():
      by_gap.setdefault(tag.rsplit('/', 1)[1], []).append(value)
  for gap, values in by_gap.items():
    scalars[f'ics/mean_over_layers/{gap}'] = float(np.mean(values))
  return scalars, histograms


def _scale(layer):
  """The learned per-unit scale variable of a unit's layer, or None."""
  if isinstance(layer, keras.layers.BatchNormalization):
    return layer.gamma if layer.scale else None
  if isinstance(layer, wrappers.WeightNormalization):
    return layer.effective_g()
  return getattr(layer, getattr(layer, '_scale_name', 'gamma'), None)


def weight_statistics(model):
  """{tag: values}: every kernel's per-unit norms ||W_i||, and learned scales.

  Tags are `weights/<unit>/kernel_norm` and `weights/<unit>/scale` (NormProp's
  gamma, weight norm's g or BN's gamma), with the unit named as in
  `units`, so the methods line up; a kernel outside any unit (a classifier)
  goes under its layer's name.
  """
  name_of, scales = {}, {}
  for unit, kind, layer in units(model):
    owner = _producer(model, layer) if kind == 'batchnorm' else layer
    if owner is not None:
      name_of[id(owner)] = unit
    scales[unit] = _scale(layer)
  result = {}
  for layer in model.layers:
    kernel = _kernel(layer)
    if kernel is None or len(kernel.shape) < 2:
      continue
    name = name_of.get(id(layer), layer.name)
    w = np.asarray(keras.ops.convert_to_numpy(kernel), np.float64)
    out = (wrappers.output_axes(layer.layer, w.ndim)
           if isinstance(layer, wrappers.WeightNormalization |
                         wrappers.NormPropagation) else (w.ndim - 1,))
    axes = tuple(a for a in range(w.ndim) if a not in out)
    result[f'weights/{name}/kernel_norm'] = np.sqrt(
        np.sum(np.square(w), axis=axes)).reshape(-1)
    if name not in scales and isinstance(layer, _NORMPROP + _WEIGHTNORM):
      scales[name] = _scale(layer)
  for name, scale in scales.items():
    if scale is not None:
      result[f'weights/{name}/scale'] = np.asarray(
          keras.ops.convert_to_numpy(scale))
  return result
