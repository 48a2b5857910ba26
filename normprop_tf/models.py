"""Network in Network (Lin et al., 2014) with NormProp, BN, weight norm or none.

The architecture of the NormProp paper's CIFAR/SVHN experiments
(docs/method.md, "Architecture"; reconstructed): 'same' padding throughout,

```
conv 5x5 192 -> 1x1 160 -> 1x1 96  -> maxpool 3x3/2 -> (dropout)
conv 5x5 192 -> 1x1 192 -> 1x1 192 -> avgpool 3x3/2 -> (dropout)
conv 3x3 192 -> 1x1 192 -> 1x1 K (classifier) -> global average pool
```

The model returns logits (float32, also under mixed precision); apply
softmax in the loss (`from_logits=True`).

Hidden layers are named `conv1` ... `conv8`; the classifier is `classifier`.
`normprop_tf.diagnostics.probe_model` exposes, for every hidden layer, what
the method normalizes, its pre-activation and its output, keyed by name.
"""

import keras

from normprop_tf import activations
from normprop_tf import diagnostics
from normprop_tf import layers as np_layers
from normprop_tf import pooling
from normprop_tf.utils import checks

NORMS = ('normprop', 'batchnorm', 'weightnorm', 'plain')

# (filters, kernel size) of the eight hidden convs, and where pooling goes.
_HIDDEN = ((192, 5), (160, 1), (96, 1), (192, 5), (192, 1), (192, 1),
           (192, 3), (192, 1))
_POOL_AFTER = {3: 'max', 6: 'avg'}


def hidden_layer_names(num_hidden=len(_HIDDEN)):
  """Names of the hidden conv layers, in order."""
  return [f'conv{i}' for i in range(1, num_hidden + 1)]


CLASSIFIERS = ('default', 'plain')


def _validate(norm, num_classes, width, dropout, activation, input_shape):
  checks.one_of('norm', norm, NORMS)
  checks.integer('num_classes', num_classes, minimum=2)
  checks.number('width', width, 0, 16, low_open=True)
  checks.number('dropout', dropout, 0, 1, high_open=True)
  if norm == 'normprop':
    activations.canonical_name(activation)  # Raises on unknown names.
  else:
    try:
      keras.activations.get(activation)
    except (ValueError, TypeError):
      checks.fail('activation', activation, 'must be a Keras activation name')
  if len(tuple(input_shape)) != 3:
    checks.fail('input_shape', input_shape,
                'must be (height, width, channels)')


def _validate_extensions(norm, gamma_init, classifier, classifier_gamma,
                         pool_correction):
  """The options beyond the paper's recipe (docs/method.md)."""
  if gamma_init is not None:
    checks.positive_number('gamma_init', gamma_init)
    if norm != 'normprop':
      checks.fail('gamma_init', gamma_init, "applies to norm='normprop' only")
  checks.one_of('classifier', classifier, CLASSIFIERS)
  if classifier_gamma is not None:
    checks.positive_number('classifier_gamma', classifier_gamma)
    if norm not in ('normprop', 'weightnorm') or classifier == 'plain':
      checks.fail('classifier_gamma', classifier_gamma,
                  "sets the scale of a NormProp or weight-norm classifier; "
                  "it needs norm='normprop' or 'weightnorm' and "
                  "classifier='default'")
  if pool_correction is not None:
    checks.number('pool_correction', pool_correction, 0,
                  pooling.MAX_CORRELATION)
    if norm != 'normprop':
      checks.fail('pool_correction', pool_correction,
                  "applies to norm='normprop' only")


def check_arguments(norm='normprop', width=1.0, dropout=0.0,
                    activation='relu', synchronized_bn=False, gamma_init=None,
                    classifier='default', classifier_gamma=None,
                    pool_correction=None, absorb_shifts=True):
  """Validates `nin`'s arguments other than the data's, without building.

  Training calls it before preparing any data, so that a bad setting fails
  in a second, not after minutes.

  Raises:
    ValueError: naming the argument and the value received.
  """
  _validate(norm, 2, width, dropout, activation, (1, 1, 1))
  checks.one_of('synchronized_bn', synchronized_bn, (True, False))
  _validate_extensions(norm, gamma_init, classifier, classifier_gamma,
                       pool_correction)
  checks.one_of('absorb_shifts', absorb_shifts, (True, False))


def _hidden_block(x, norm, name, filters, kernel_size, activation,
                  synchronized_bn, gamma_init, shift=None):
  """One hidden conv of the given normalization kind.

  shift: NormProp only, None or (input_shift, center_output) of the layer.
  """
  if norm == 'normprop':
    gamma = (None if gamma_init is None else
             keras.initializers.Constant(gamma_init))
    input_shift, center = shift or (0.0, True)
    return np_layers.NormPropConv2D(
        filters, kernel_size, activation=activation, gamma_initializer=gamma,
        input_shift=input_shift, center_output=center, name=name)(x)
  if norm == 'weightnorm':
    return np_layers.WeightNormConv2D(
        filters, kernel_size, activation=activation, name=name)(x)
  use_bn = norm == 'batchnorm'
  x = keras.layers.Conv2D(filters, kernel_size, padding='same',
                          use_bias=not use_bn, name=name)(x)
  if use_bn:
    x = keras.layers.BatchNormalization(
        synchronized=synchronized_bn, name=f'{name}_bn')(x)
  return keras.layers.Activation(activation, name=f'{name}_act')(x)


def _classifier(x, norm, num_classes, classifier, classifier_gamma,
                pending=0.0):
  scale = (None if classifier_gamma is None else
           keras.initializers.Constant(classifier_gamma))
  if classifier == 'plain' or norm in ('batchnorm', 'plain'):
    x = _take_shift(x, pending, 'classifier_shift')
    return keras.layers.Conv2D(num_classes, 1, name='classifier')(x)
  if norm == 'normprop':
    return np_layers.NormPropConv2D(num_classes, 1, activation=None,
                                    gamma_initializer=scale,
                                    input_shift=pending,
                                    name='classifier')(x)
  return np_layers.WeightNormConv2D(num_classes, 1, activation=None,
                                    g_initializer=scale or 'ones',
                                    name='classifier')(x)


def _take_shift(x, pending, name):
  """x - pending, as a standard layer (one pass over a pooled map)."""
  if not pending:
    return x
  return keras.layers.Rescaling(1.0, offset=-pending, name=name)(x)


def _output_shift(activation):
  """c1/c2: what a NormProp layer with center_output=False adds."""
  m = activations.moments(activation)
  return m.mean / m.std


def _absorbs(norm, activation, absorb_shifts):
  return (absorb_shifts and norm == 'normprop' and
          activations.is_positively_homogeneous(activation))


def nin(norm='normprop', num_classes=10, width=1.0, dropout=0.0,
        activation='relu', input_shape=(32, 32, 3), synchronized_bn=False,
        gamma_init=None, classifier='default', classifier_gamma=None,
        pool_correction=None, absorb_shifts=True, name=None):
  """Builds the Network-in-Network of the NormProp paper.

  Args:
    norm: 'normprop' (NormProp convs, classifier without post-normalization),
      'batchnorm' (conv without bias -> BatchNormalization -> activation),
      'weightnorm' (Salimans & Kingma convs) or 'plain' (conv + bias).
    num_classes: K, the classifier's channels (10 for CIFAR-10 and SVHN).
    width: multiplies every hidden channel count (not the classifier).
    dropout: rate of the two dropout layers after the pools; 0 removes them.
      Keras dropout is inverted (kept units are scaled by 1/(1-rate)), which
      raises the variance NormProp assumes by 1/(1-rate) during training.
    activation: hidden activation. For NormProp any name in
      `normprop_tf.activations.SUPPORTED`; otherwise a Keras activation name.
    input_shape: (height, width, channels) of the standardized input.
    synchronized_bn: for 'batchnorm', synchronize batch statistics across
      replicas under tf.distribute.
    gamma_init: NormProp only: the hidden layers' initial gamma. None: the
      layer default (1/1.21 for ReLU, the paper's); 1.0 keeps the forward
      statistics at (0, 1) instead of the gradient norms.
    classifier: 'default' (the method's own: NormProp or weight-norm conv
      for those norms, a plain conv with bias for BN and plain) or 'plain'
      (a plain conv with bias for every norm, as in the BN network).
    classifier_gamma: initial gamma (g) of a NormProp or weight-norm
      classifier. None: 1.0.
    pool_correction: NormProp only. None (the paper): no correction after
      pooling. A number rho in [0, 0.95]: a `layers.PoolingCorrection` after
      each pool restores zero mean and unit variance, assuming correlation
      rho inside a pooling window (an extension; docs/method.md).
    absorb_shifts: NormProp with ReLU (or another positively homogeneous
      activation) only; the same function either way, up to float
      rounding. True (default): each hidden layer leaves its constant
      `- c1/c2` to its consumer (`center_output=False`), which takes it as
      its `input_shift` (into its bias, or off its input when that is
      cheaper); pools commute with it. With dropout or a pooling correction
      after a pool, one `Rescaling` subtracts it from the pooled map first.
      That saves a pass over every hidden activation and the memory of a
      second copy of it. False: each layer centres its own
      output, as the layers do on their own (the code that made the
      reduced protocol's records).
    name: model name; defaults to f'nin_{norm}'.

  Returns:
    A functional `keras.Model` mapping images to float32 logits (batch, K).
  """
  _validate(norm, num_classes, width, dropout, activation, input_shape)
  _validate_extensions(norm, gamma_init, classifier, classifier_gamma,
                       pool_correction)
  checks.one_of('absorb_shifts', absorb_shifts, (True, False))
  absorb = _absorbs(norm, activation, absorb_shifts)
  inputs = keras.Input(shape=tuple(input_shape), name='image')
  x, pending = inputs, 0.0  # The real activation is x - pending.
  for i, (filters, size) in enumerate(_HIDDEN, start=1):
    x = _hidden_block(x, norm, f'conv{i}', max(1, round(filters * width)),
                      size, activation, synchronized_bn, gamma_init,
                      (pending, not absorb))
    pending = _output_shift(activation) if absorb else 0.0
    if i in _POOL_AFTER:
      kind = _POOL_AFTER[i]
      pool = (keras.layers.MaxPooling2D if kind == 'max' else
              keras.layers.AveragePooling2D)
      x = pool(3, strides=2, padding='same', name=f'pool{i // 3}')(x)
      if dropout or pool_correction is not None:
        # Dropout scales its input and the correction assumes a centred
        # one, so the shift comes off the pooled map first; otherwise the
        # next conv takes it.
        x, pending = _take_shift(x, pending, f'pool{i // 3}_shift'), 0.0
      if pool_correction is not None:
        x = np_layers.PoolingCorrection(
            kind, 3, activation, pool_correction,
            name=f'pool{i // 3}_correction')(x)
      if dropout:
        x = keras.layers.Dropout(dropout, name=f'dropout{i // 3}')(x)
  x = _classifier(x, norm, num_classes, classifier, classifier_gamma,
                  pending)
  x = keras.layers.GlobalAveragePooling2D(name='global_pool')(x)
  # Logits stay float32 under mixed precision (docs/stack.md).
  logits = keras.layers.Activation('linear', dtype='float32', name='logits')(x)
  return keras.Model(inputs, logits, name=name or f'nin_{norm}')


def norm_kind(model):
  """Infers which `NORMS` entry a model built by `nin` uses."""
  layer = model.get_layer('conv1')
  if isinstance(layer, np_layers.NormPropConv2D):
    return 'normprop'
  if isinstance(layer, np_layers.WeightNormConv2D):
    return 'weightnorm'
  names = {l.name for l in model.layers}
  return 'batchnorm' if 'conv1_bn' in names else 'plain'


def probe_model(model):
  """`normprop_tf.diagnostics.probe_model`, kept here for existing callers."""
  return diagnostics.probe_model(model)


__all__ = ['nin', 'probe_model', 'norm_kind', 'hidden_layer_names', 'NORMS',
           'check_arguments']
