"""normprop_tf.WeightNormalization and NormPropagation around any kernel layer.

Every wrapped layer type is checked against an independent float64 NumPy
reference (tests/reference.py's convolutions, with the per-unit norm taken
over the axes this file names for each type, not the library's), for
gradients through the norm, for the data-dependent initialization, for
`.keras` round trips, for `export.fold`, and against the fixed layers
(`WeightNormConv2D`, `NormPropConv2D`, the Dense classes) on equal weights.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import keras
from keras.src import testing
import numpy as np
import pytest
import tensorflow as tf

import normprop_tf as npt
from normprop_tf import activations
from normprop_tf import diagnostics
from normprop_tf import export
from normprop_tf import layers
from tests import reference

L = keras.layers


def _dense(x, k, cfg):
  return x @ k


def _conv(x, k, cfg):
  return reference.conv_nd(x, k, cfg['strides'], cfg['padding'])


def _conv_transpose(x, k, cfg):
  return reference.conv_transpose_nd(x, k, cfg['strides'], cfg['padding'])


def _depthwise(x, k, cfg):
  return reference.depthwise_nd(x, k, cfg['strides'], cfg['padding'])


def _separable(x, k, cfg, depthwise):
  y = reference.depthwise_nd(x, depthwise, cfg['strides'], cfg['padding'])
  return reference.conv_nd(y, k, (1,) * (x.ndim - 2), 'valid')


# name: (layer factory, input shape, linear reference, kernel axes that
# index the output units). Written out per type, not taken from the library.
TYPES = {
    'Dense': (lambda **kw: L.Dense(4, **kw), (5, 3), _dense, (-1,)),
    'Conv1D': (lambda **kw: L.Conv1D(4, 3, strides=2, padding='same', **kw),
               (2, 9, 3), _conv, (-1,)),
    'Conv2D': (lambda **kw: L.Conv2D(4, 3, padding='same', **kw),
               (2, 6, 5, 3), _conv, (-1,)),
    'Conv3D': (lambda **kw: L.Conv3D(4, 2, **kw), (2, 4, 3, 4, 2), _conv,
               (-1,)),
    'Conv1DTranspose': (lambda **kw: L.Conv1DTranspose(
        4, 3, strides=2, padding='same', **kw), (2, 5, 3), _conv_transpose,
                        (-2,)),
    'Conv2DTranspose': (lambda **kw: L.Conv2DTranspose(
        4, 3, strides=2, **kw), (2, 4, 3, 3), _conv_transpose, (-2,)),
    'Conv3DTranspose': (lambda **kw: L.Conv3DTranspose(
        3, 2, strides=2, padding='same', **kw), (1, 3, 2, 3, 2),
                        _conv_transpose, (-2,)),
    'DepthwiseConv1D': (lambda **kw: L.DepthwiseConv1D(
        3, depth_multiplier=2, padding='same', **kw), (2, 7, 3), _depthwise,
                        (-2, -1)),
    'DepthwiseConv2D': (lambda **kw: L.DepthwiseConv2D(
        3, depth_multiplier=2, **kw), (2, 6, 6, 3), _depthwise, (-2, -1)),
    'SeparableConv1D': (lambda **kw: L.SeparableConv1D(4, 3, **kw),
                        (2, 8, 3), None, (-1,)),
    'SeparableConv2D': (lambda **kw: L.SeparableConv2D(
        4, 3, padding='same', **kw), (2, 5, 6, 3), None, (-1,)),
}
NAMES = sorted(TYPES)


def _config(layer):
  cfg = layer.get_config()
  rank = len(layer.kernel.shape if hasattr(layer, 'kernel') and
             layer.kernel is not None else layer.pointwise_kernel.shape)
  n = rank - 2
  strides = cfg.get('strides', 1)
  strides = (strides,) * n if isinstance(strides, int) else tuple(strides)
  return {'strides': strides, 'padding': cfg.get('padding', 'valid')}


def _x(shape, seed=1, dtype='float64'):
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _unit(v, out_axes):
  """v / ||v|| per output unit: norms over every axis not in out_axes."""
  out = {a % v.ndim for a in out_axes}
  axes = tuple(a for a in range(v.ndim) if a not in out)
  return v / np.sqrt(np.sum(v**2, axis=axes, keepdims=True))


def _per_unit_shape(v, out_axes):
  out = {a % v.ndim for a in out_axes}
  return tuple(v.shape[a] if a in out else 1 for a in range(v.ndim))


def _linear_reference(name, wrapper, x, kernel):
  """The wrapped layer's linear map (no bias) with `kernel` in NumPy."""
  inner = wrapper.layer
  fn = TYPES[name][2]
  cfg = _config(inner)
  if fn is None:
    depthwise = np.asarray(inner.depthwise_kernel.numpy(), np.float64)
    return _separable(x, kernel, cfg, depthwise)
  return fn(x, kernel, cfg)


def _randomize(wrapper, seed):
  """Random v, scale and bias (away from their initial values).

  v ~ N(0, 1): squared unit norms of at least ~1, so the library's 1e-12
  guard under the square root moves float64 results by < 1e-12.
  """
  rng = np.random.default_rng(seed)
  for var in wrapper.trainable_weights:
    if len(var.shape) >= 2:
      var.assign(rng.standard_normal(var.shape))
    else:
      var.assign(rng.uniform(0.5, 1.5, var.shape) if 'g' in var.path.split(
          '/')[-1][:5] else rng.uniform(-0.5, 0.5, var.shape))


@pytest.mark.parametrize('name', NAMES)
def test_weight_normalization_matches_numpy(name):
  """g * v / ||v|| per unit, bias and the layer's own activation: 1e-10."""
  make, shape, _, out_axes = TYPES[name]
  x = _x(shape)
  wrapper = npt.WeightNormalization(make(activation='tanh', dtype='float64'),
                                    data_init=False)
  wrapper(x)
  _randomize(wrapper, seed=2)
  v = np.asarray(wrapper.v.numpy(), np.float64)
  g = wrapper.g.numpy().reshape(_per_unit_shape(v, out_axes))
  kernel = g * _unit(v, out_axes)
  want = np.tanh(_linear_reference(name, wrapper, x, kernel) +
                 wrapper.layer.bias.numpy())
  np.testing.assert_allclose(wrapper(x), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('activation', ['relu', 'tanh', None])
def test_norm_propagation_matches_numpy(name, activation):
  """(f(gamma * layer(x; v / ||v||) + beta) - c1) / c2: 1e-10."""
  make, shape, _, out_axes = TYPES[name]
  x = _x(shape)
  wrapper = npt.NormPropagation(make(dtype='float64'), activation=activation)
  wrapper(x)
  _randomize(wrapper, seed=3)
  v = np.asarray(wrapper.v.numpy(), np.float64)
  gamma = wrapper.gamma.numpy().reshape(_per_unit_shape(v, out_axes))
  u = _linear_reference(name, wrapper, x, gamma * _unit(v, out_axes)) + (
      wrapper.beta.numpy())
  if activation is None:
    want = u
  else:
    m = activations.moments(activation)
    want = (activations.numpy_fn(activation)(u) - m.mean) / m.std
  np.testing.assert_allclose(wrapper(x), want, rtol=1e-10, atol=1e-12)


def _copy_weights(fixed, wrapper, x):
  """Random weights in `fixed`, copied into `wrapper` (kernel, scale, bias)."""
  fixed(x)
  wrapper(x)
  rng = np.random.default_rng(7)
  kernel, scale, bias = fixed.weights
  kernel.assign(rng.standard_normal(kernel.shape) * 0.3)
  scale.assign(rng.uniform(0.5, 1.5, scale.shape))
  bias.assign(rng.uniform(-0.5, 0.5, bias.shape))
  wrapper.v.assign(kernel.numpy())
  (wrapper.gamma if isinstance(wrapper, npt.NormPropagation) else
   wrapper.g).assign(scale.numpy())
  wrapper.layer.bias.assign(bias.numpy())


@pytest.mark.parametrize('fixed,wrapped,shape', [
    (lambda: layers.NormPropConv2D(4, 3, dtype='float64'),
     lambda: npt.NormPropagation(L.Conv2D(4, 3, padding='same',
                                          dtype='float64')), (2, 6, 6, 3)),
    (lambda: layers.NormPropDense(4, dtype='float64'),
     lambda: npt.NormPropagation(L.Dense(4, dtype='float64')), (5, 3)),
    (lambda: layers.NormPropDense(4, activation=None, dtype='float64'),
     lambda: npt.NormPropagation(L.Dense(4, dtype='float64'),
                                 activation=None), (5, 3)),
    (lambda: layers.WeightNormConv2D(4, 3, dtype='float64'),
     lambda: npt.WeightNormalization(L.Conv2D(
         4, 3, padding='same', activation='relu', dtype='float64'),
                                     data_init=False), (2, 6, 6, 3)),
    (lambda: layers.WeightNormDense(4, dtype='float64'),
     lambda: npt.WeightNormalization(L.Dense(4, activation='relu',
                                             dtype='float64'),
                                     data_init=False), (5, 3)),
])
def test_wrappers_compute_what_the_fixed_layers_compute(fixed, wrapped, shape):
  x = _x(shape)
  fixed, wrapped = fixed(), wrapped()
  _copy_weights(fixed, wrapped, x)
  np.testing.assert_allclose(wrapped(x), fixed(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('name', ['Conv1D', 'Conv2DTranspose',
                                  'DepthwiseConv2D', 'SeparableConv1D'])
@pytest.mark.parametrize('cls', ['WeightNormalization', 'NormPropagation'])
def test_gradient_flows_through_the_norm(name, cls):
  """<dL/dv_i, v_i> = 0 for every unit, and dL/dv agrees with central
  differences (float64, rtol 1e-6, as in tests/layers_test.py).

  A norm wrapped in stop_gradient, or taken over the wrong axes (the
  transposed kernel's units sit on the second-to-last axis), breaks the
  scale invariance by orders of magnitude.
  """
  make, shape, _, out_axes = TYPES[name]
  x = tf.constant(_x(shape, seed=4))
  wrapper = (npt.WeightNormalization(make(dtype='float64'), data_init=False)
             if cls == 'WeightNormalization' else
             npt.NormPropagation(make(dtype='float64'), activation='tanh'))
  wrapper(x)
  _randomize(wrapper, seed=5)
  r = tf.constant(_x(tuple(wrapper(x).shape), seed=6))

  def loss():
    return tf.reduce_sum(wrapper(x) * r)

  with tf.GradientTape() as tape:
    value = loss()
  dv = tape.gradient(value, wrapper.v).numpy()
  v = wrapper.v.numpy()
  out = {a % v.ndim for a in out_axes}
  axes = tuple(a for a in range(v.ndim) if a not in out)
  inner = np.sum(dv * v, axis=axes)
  scale = np.sqrt(np.sum(dv**2, axis=axes) * np.sum(v**2, axis=axes))
  assert np.all(scale > 1e-4)
  np.testing.assert_array_less(np.abs(inner) / scale, 1e-10)
  eps, base = 1e-6, v.copy()
  for idx in list(np.ndindex(v.shape))[::max(1, v.size // 12)]:
    numeric = 0.0
    for sign in (1, -1):
      bumped = base.copy()
      bumped[idx] += sign * eps
      wrapper.v.assign(bumped)
      numeric += sign * float(loss()) / (2 * eps)
    wrapper.v.assign(base)
    np.testing.assert_allclose(dv[idx], numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize('name', NAMES)
def test_data_init_standardizes_the_first_batch_once(name):
  """Pre-activations of the first batch: mean 0 and std 1 per unit (1e-5);
  a second batch leaves the initialization as it is."""
  make, shape, _, _ = TYPES[name]
  x = (_x((16,) + shape[1:], seed=8, dtype='float32') * 3.0 + 1.5)
  wrapper = npt.WeightNormalization(make(), data_init=True)
  y = np.asarray(wrapper(x), np.float64)
  channels = y.reshape(-1, y.shape[-1])
  np.testing.assert_allclose(channels.mean(axis=0), 0.0, atol=1e-5)
  np.testing.assert_allclose(channels.std(axis=0), 1.0, atol=1e-5)
  before = [w.numpy().copy() for w in wrapper.weights]
  wrapper(x[:4] * 5.0 - 2.0)
  for a, w in zip(before, wrapper.weights):
    np.testing.assert_array_equal(a, w.numpy())
  assert float(wrapper.initialized.numpy()) == 1.0


def test_data_init_then_training_keeps_the_initialization(tmp_path):
  """The init is state, saved and restored: a model trained one step,
  saved and loaded computes the same outputs, and is not re-initialized by
  its first batch after loading."""
  x = _x((32, 12, 3), seed=9, dtype='float32')
  y = np.random.default_rng(9).integers(0, 3, 32)
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((12, 3)),
      npt.WeightNormalization(L.Conv1D(6, 3, activation='relu')),
      L.GlobalAveragePooling1D(),
      npt.WeightNormalization(L.Dense(3)),
  ])
  model.compile(optimizer=keras.optimizers.SGD(0.1),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  model.fit(x, y, batch_size=32, epochs=1, verbose=0)
  path = tmp_path / 'wn.keras'
  model.save(path)
  loaded = keras.models.load_model(path)
  other = x[:8] * 4.0 + 3.0  # A first batch that would re-initialize.
  np.testing.assert_array_equal(loaded(other), model(other))
  assert float(loaded.layers[0].initialized.numpy()) == 1.0


@pytest.mark.parametrize('make', [
    lambda: npt.WeightNormalization(L.Conv1D(4, 3, activation='relu')),
    lambda: npt.WeightNormalization(L.Conv2DTranspose(4, 3, strides=2),
                                    data_init=False),
    lambda: npt.NormPropagation(L.DepthwiseConv2D(3, depth_multiplier=2)),
    lambda: npt.NormPropagation(L.SeparableConv2D(4, 3), activation='tanh',
                                weight_norm_divisor=1.21),
    lambda: npt.NormPropagation(L.Dense(4), activation=None),
])
def test_keras_round_trip_is_exact(make, tmp_path):
  wrapper = make()
  shape = ((2, 7, 7, 3) if 'Conv2D' in type(wrapper.layer).__name__
           else (2, 9, 3) if 'Conv1D' in type(wrapper.layer).__name__
           else (2, 5))
  model = keras.Sequential([keras.Input(shape[1:]), wrapper])
  x = _x(shape, seed=10, dtype='float32')
  model(x)
  _randomize(wrapper, seed=11)
  path = tmp_path / 'm.keras'
  model.save(path)
  loaded = keras.models.load_model(path)
  assert type(loaded.layers[0]) is type(wrapper)
  # Through JSON: the wrapped layer's build_config comes back with lists.
  assert json.loads(json.dumps(loaded.layers[0].get_config())) == json.loads(
      json.dumps(wrapper.get_config()))
  np.testing.assert_array_equal(loaded(x), model(x))


@pytest.mark.parametrize('bad,match', [
    (lambda: npt.WeightNormalization('conv'), 'Keras layer instance'),
    (lambda: npt.WeightNormalization(L.Dropout(0.5))(np.ones((2, 3))),
     'no kernel'),
    (lambda: npt.NormPropagation(L.Embedding(5, 3))(np.ones((2, 3))),
     'no kernel'),
    (lambda: npt.NormPropagation(L.Conv1D(4, 3, activation='relu')),
     "activation='relu'"),
    (lambda: npt.NormPropagation(L.Dense(4, use_bias=False)),
     'use_bias=False'),
    (lambda: npt.NormPropagation(L.Dense(4), activation='nope'), 'nope'),
    (lambda: npt.WeightNormalization(L.Dense(4), data_init='yes'),
     'data_init'),
    (lambda: npt.NormPropagation(L.Dense(4), weight_norm_divisor=-1.0),
     'weight_norm_divisor'),
])
def test_bad_arguments_raise_value_error_naming_what_was_received(bad, match):
  with pytest.raises(ValueError, match=match):
    bad()


@pytest.mark.parametrize('model_fn,shape', [
    # A TCN-style stack: NormProp convs, a pool between them, a WN classifier.
    (lambda: keras.Sequential([
        keras.Input((16, 3)),
        npt.NormPropagation(L.Conv1D(8, 3, padding='same')),
        npt.NormPropagation(L.Conv1D(8, 1)),
        L.MaxPooling1D(2),
        npt.NormPropagation(L.Conv1D(8, 3, padding='same')),
        L.GlobalAveragePooling1D(),
        npt.NormPropagation(L.Dense(5), activation=None)]), (4, 16, 3)),
    (lambda: keras.Sequential([
        keras.Input((8, 8, 3)),
        npt.NormPropagation(L.DepthwiseConv2D(3, padding='same')),
        npt.NormPropagation(L.SeparableConv2D(6, 3, padding='same')),
        npt.NormPropagation(L.Conv2DTranspose(4, 3, strides=2,
                                              padding='same')),
        npt.WeightNormalization(L.Conv2D(5, 3, activation='relu')),
        L.Flatten(),
        npt.WeightNormalization(L.Dense(3))]), (4, 8, 8, 3)),
])
def test_fold_gives_the_plain_wrapped_layers(model_fn, shape):
  """Folded: only standard Keras layers, same outputs: max error over max
  |output| below 1e-5, as in tests/export_test.py (float32 rounding of
  reordered sums; a wrong shift or kernel is off by 1e-2 or more)."""
  keras.utils.set_random_seed(1)
  model = model_fn()
  x = _x(shape, seed=12, dtype='float32')
  model(x)  # data_init on this batch.
  for layer in model.layers:
    if isinstance(layer, npt.NormPropagation):
      _randomize(layer, seed=13)
  folded = export.fold(model)
  assert all(type(l).__module__.startswith('keras.') for l in folded.layers)
  assert not any(isinstance(l, (npt.NormPropagation, npt.WeightNormalization))
                 for l in folded.layers)
  want = np.asarray(model(x), np.float64)
  got = np.asarray(folded(x), np.float64)
  assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-5


def test_remove_returns_the_layer_computing_the_same_function():
  """As tfa's `remove()`: the bare layer with the effective kernel and bias."""
  x = _x((6, 10, 3), seed=14, dtype='float32')
  wrapper = npt.WeightNormalization(L.Conv1D(4, 3, activation='relu'))
  want = np.asarray(wrapper(x))
  bare = wrapper.remove()
  assert type(bare) is L.Conv1D
  np.testing.assert_allclose(bare(x), want, rtol=1e-6, atol=1e-6)


class WrapperLayerTest(testing.TestCase):
  """Keras' own layer test: build, shapes, weights counts, serialization,
  training, under the backend in use."""

  def test_weight_normalization_conv1d(self):
    self.run_layer_test(
        npt.WeightNormalization,
        init_kwargs={'layer': L.Conv1D(4, 3), 'data_init': False},
        input_shape=(2, 8, 3), expected_output_shape=(2, 6, 4),
        expected_num_trainable_weights=3,
        expected_num_non_trainable_weights=0, supports_masking=False)

  def test_weight_normalization_data_init_dense(self):
    self.run_layer_test(
        npt.WeightNormalization,
        init_kwargs={'layer': L.Dense(4), 'data_init': True},
        input_shape=(3, 5), expected_output_shape=(3, 4),
        expected_num_trainable_weights=3,
        expected_num_non_trainable_weights=3, supports_masking=False,
        run_training_check=False)

  def test_norm_propagation_conv2d_transpose(self):
    self.run_layer_test(
        npt.NormPropagation,
        init_kwargs={'layer': L.Conv2DTranspose(4, 3, strides=2),
                     'activation': 'relu'},
        input_shape=(2, 4, 4, 3), expected_output_shape=(2, 9, 9, 4),
        expected_num_trainable_weights=3,
        expected_num_non_trainable_weights=0, supports_masking=False)


def _readme_block(marker):
  """The README's python block that contains `marker`."""
  text = (pathlib.Path(__file__).resolve().parents[1] / 'README.md'
          ).read_text()
  blocks = re.findall(r'```python\n(.*?)```', text, re.S)
  return next(b for b in blocks if marker in b)


def test_readme_tfa_migration_example_trains(tmp_path):
  """The README's weight-normalized Conv1D model: data init on its first
  batch (first layer's pre-activations standardized), trains, round-trips."""
  code = _readme_block('npt.WeightNormalization(keras.layers.Conv1D')
  scope = {}
  exec(compile(code, 'README.md', 'exec'), scope)  # pylint: disable=exec-used
  model = scope['model']
  rng = np.random.default_rng(15)
  x = np.cumsum(rng.standard_normal((64, 128, 1)), axis=1).astype('float32')
  y = (x[:, -1, 0] > 0).astype('int32') + 2 * (x[:, 0, 0] > 0)
  model.compile(optimizer=keras.optimizers.Adam(1e-2),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  first = model.layers[0]
  assert isinstance(first, npt.WeightNormalization) and first.data_init
  model(x)  # The first batch: every wrapper initializes from it.
  pre = np.asarray(first._call_with(  # pylint: disable=protected-access
      x, first._unit_kernel() * first._per_unit(first.effective_g()),
      first.effective_bias(), linear=True))
  flat = pre.reshape(-1, pre.shape[-1])
  np.testing.assert_allclose(flat.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(flat.std(0), 1.0, atol=1e-5)
  before = model.evaluate(x, y, verbose=0)
  model.fit(x, y, batch_size=64, epochs=20, verbose=0)
  assert model.evaluate(x, y, verbose=0) < 0.8 * before
  path = tmp_path / 'tcn.keras'
  model.save(path)
  np.testing.assert_array_equal(keras.models.load_model(path)(x), model(x))


_MIRRORED = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import normprop_tf as npt

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 9, 3)) * 2 + 0.5).astype('float32')
    # Replica halves with different statistics: a per-replica init differs.
    x[8:] = x[8:] * 3.0 - 1.0

    def make():
      keras.utils.set_random_seed(3)
      return npt.WeightNormalization(keras.layers.Conv1D(5, 3))

    single = make()
    single(x)
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    with strategy.scope():
      wrapped = make()
      wrapped.build(x.shape)
    data = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(x).batch(16))
    step = tf.function(wrapped.__call__)
    for batch in data:
      strategy.run(step, args=(batch,))
    gap, per_replica_gap = 0.0, 0.0
    for name in ('g_offset', 'bias_offset'):
      want = getattr(single, name).numpy()
      for value in strategy.experimental_local_results(getattr(wrapped, name)):
        gap = max(gap, float(np.max(np.abs(value.numpy() - want))))
    half = make()
    half(x[:8])
    per_replica_gap = float(np.max(np.abs(half.g_offset.numpy() -
                                          single.g_offset.numpy())))
    print('RESULT ' + json.dumps({'gap': gap,
                                  'per_replica_gap': per_replica_gap}))
''')


def test_data_init_under_mirrored_strategy_uses_the_global_batch():
  """2 replicas (8 examples each) initialize as 1 replica on all 16.

  The gap is float32 summation order (measured 1.2e-7); initializing from
  one replica's half instead would differ by ~0.3, so 1e-5 separates them.
  """
  proc = subprocess.run([sys.executable, '-c', _MIRRORED],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')][-1]
  result = json.loads(line[len('RESULT '):])
  assert result['gap'] < 1e-5, result
  assert result['per_replica_gap'] > 1e-2, result


def test_mixed_precision_keeps_the_norm_in_float32():
  """Under mixed_float16 the variables stay float32 and the output is the
  float32 computation rounded to float16 (1e-2, the layer tests'
  mixed-precision tolerance); a norm taken in float16 would lose the
  data-init's standardization first."""
  x = _x((16, 10, 3), seed=16, dtype='float32') * 2.0 + 1.0
  keras.utils.set_random_seed(4)
  reference_wrapper = npt.WeightNormalization(L.Conv1D(5, 3))
  want = np.asarray(reference_wrapper(x))
  keras.mixed_precision.set_global_policy('mixed_float16')
  try:
    keras.utils.set_random_seed(4)
    wrapper = npt.WeightNormalization(L.Conv1D(5, 3))
    got = wrapper(x)
    np_wrapper = npt.NormPropagation(L.Conv1D(5, 3))
    np_out = np_wrapper(x)
  finally:
    keras.mixed_precision.set_global_policy('float32')
  assert got.dtype == 'float16' and np_out.dtype == 'float16'
  assert all(w.dtype == 'float32' for w in wrapper.weights + np_wrapper.weights)
  np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=1e-2,
                             atol=1e-2)


def test_probe_finds_the_wrappers_of_a_user_model():
  """diagnostics.probe_model: a wrapper's 'normalized' part is
  v . x / ||v|| per unit (NumPy), its kernel norms are reported per unit."""
  keras.utils.set_random_seed(5)
  inputs = keras.Input((12, 3))
  h = npt.NormPropagation(L.Conv1D(6, 3), name='np_conv')(inputs)
  h = npt.WeightNormalization(L.Conv1D(4, 3, activation='relu'),
                              name='wn_conv')(h)
  h = L.GlobalAveragePooling1D()(h)
  model = keras.Model(inputs, L.Dense(2, name='head')(h))
  x = _x((8, 12, 3), seed=17, dtype='float32')
  model(x)
  probe = diagnostics.probe_model(model)
  assert probe.unit_kinds == {'np_conv': 'normprop', 'wn_conv': 'weightnorm'}
  out = probe(x)
  layer = model.get_layer('wn_conv')
  inner = np.asarray(keras.Model(model.input, layer.input)(x), np.float64)
  v = layer.v.numpy().astype(np.float64)
  want = reference.conv_nd(inner, v / np.sqrt(np.sum(v**2, axis=(0, 1))),
                           (1,), 'valid')
  np.testing.assert_allclose(out['wn_conv/normalized'], want, rtol=1e-5,
                             atol=1e-5)
  norms = diagnostics.weight_statistics(model)
  np.testing.assert_allclose(norms['weights/wn_conv/kernel_norm'],
                             np.sqrt(np.sum(v**2, axis=(0, 1))), rtol=1e-6)


_JAX = textwrap.dedent('''
    import importlib.abc, json, sys

    class _NoTensorFlow(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path, target=None):
        if name.split('.')[0] == 'tensorflow':
          raise ImportError(f'{name} is not installed here')

    sys.meta_path.insert(0, _NoTensorFlow())
    import keras
    import numpy as np
    import normprop_tf as npt
    from normprop_tf import export
    assert keras.backend.backend() == 'jax'
    tmp = sys.argv[1]
    x, y = np.load(f'{tmp}/x.npy'), np.load(f'{tmp}/y.npy')
    loaded = keras.models.load_model(f'{tmp}/tf.keras')
    tf_gap = float(np.max(np.abs(np.asarray(loaded(x)) - np.load(
        f'{tmp}/tf_out.npy'))))
    # A fresh model: data init inside the first jitted train step.
    model = keras.models.clone_model(loaded)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    first = model.layers[0]
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    initialized = float(np.asarray(first.initialized.value))
    g_offset = np.asarray(first.g_offset.value)
    before = float(model.evaluate(x, y, verbose=0))
    model.fit(x, y, batch_size=len(x), epochs=20, verbose=0, shuffle=False)
    after = float(model.evaluate(x, y, verbose=0))
    fold_gap = float(np.max(np.abs(np.asarray(export.fold(model)(x)) -
                                   np.asarray(model(x)))) /
                     np.max(np.abs(np.asarray(model(x)))))
    eager = keras.models.clone_model(loaded)
    eager(x)
    wn = eager.layers[0]
    pre = np.asarray(wn._call_with(x, wn._unit_kernel() * wn._per_unit(
        wn.effective_g()), wn.effective_bias(), linear=True)).reshape(-1, 8)
    assert not [m for m in sys.modules if m.split('.')[0] == 'tensorflow']
    print('RESULT ' + json.dumps(dict(
        init_mean=float(np.max(np.abs(pre.mean(0)))),
        init_std=float(np.max(np.abs(pre.std(0) - 1))), tf_gap=tf_gap, initialized=initialized,
        g_offset_nonzero=float(np.max(np.abs(g_offset))), before=before,
        after=after, fold_gap=fold_gap)))
''')


def test_wrappers_under_jax_without_tensorflow(tmp_path):
  """Under KERAS_BACKEND=jax with TensorFlow unimportable: a `.keras` file
  saved under TensorFlow loads and matches (1e-5), data init standardizes
  the first batch (mean 0, std 1 within 1e-5), happens inside
  the jitted train step and persists, training lowers the loss, and the
  model folds (scaled error < 1e-5)."""
  keras.utils.set_random_seed(6)
  model = keras.Sequential([
      keras.Input((16, 3)),
      npt.WeightNormalization(L.Conv1D(8, 3, activation='relu')),
      npt.NormPropagation(L.Conv1DTranspose(6, 3, strides=2)),
      npt.NormPropagation(L.DepthwiseConv1D(3)),
      L.GlobalAveragePooling1D(),
      npt.WeightNormalization(L.Dense(3), data_init=False),
  ])
  x = (_x((32, 16, 3), seed=18, dtype='float32') * 2.0 + 1.0)
  y = np.random.default_rng(18).integers(0, 3, 32)
  np.save(tmp_path / 'tf_out.npy', np.asarray(model(x)))
  model.save(tmp_path / 'tf.keras')
  np.save(tmp_path / 'x.npy', x)
  np.save(tmp_path / 'y.npy', y)
  env = dict(os.environ, KERAS_BACKEND='jax', JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', _JAX, str(tmp_path)], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')][-1]
  r = json.loads(line[len('RESULT '):])
  assert r['tf_gap'] < 1e-5, r
  assert r['init_mean'] < 1e-5 and r['init_std'] < 1e-5, r
  assert r['initialized'] == 1.0 and r['g_offset_nonzero'] > 1e-3, r
  assert r['after'] < r['before'], r
  assert r['fold_gap'] < 1e-5, r
