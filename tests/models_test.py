"""NIN architecture, probes, serialization and batch-size-1 training."""

import keras
import numpy as np
import pytest

from normprop_tf import layers
from normprop_tf import models

# Expected parameter counts at width 1.0, K = 10, written out from
# docs/method.md, "Architecture": hidden convs (k, c_in -> c_out) are (5, 3->192), (1, 192->160),
# (1, 160->96), (5, 96->192), (1, 192->192) x2, (3, 192->192),
# (1, 192->192); their kernels hold 963,648 weights and 1,408 units.
# - normprop/weightnorm: kernels + 2 per unit (gamma, beta) + classifier
#   1x1 192->10 with gamma and beta (1,940): 963,648 + 2,816 + 1,940.
# - none: kernels + 1 bias per unit + classifier with bias (1,930).
# - batchnorm: kernels (no bias) + 4 per unit (2 trainable, 2 moving) +
#   classifier with bias.
EXPECTED_PARAMS = {
    'normprop': (968_404, 0),
    'weightnorm': (968_404, 0),
    'plain': (966_986, 0),
    'batchnorm': (968_394, 2_816),
}


@pytest.mark.parametrize('norm', models.NORMS)
def test_nin_parameter_counts(norm):
  model = models.nin(norm)
  trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
  frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
  assert (trainable, frozen) == EXPECTED_PARAMS[norm]


def test_nin_structure():
  model = models.nin('normprop', num_classes=100, width=0.5, dropout=0.5)
  assert model.output_shape == (None, 100)
  assert model.get_layer('conv1').filters == 96  # 192 * 0.5.
  assert model.get_layer('classifier').filters == 100  # Width leaves K alone.
  assert model.get_layer('classifier').activation is None
  assert model.get_layer('pool1').output.shape[1:3] == (16, 16)
  assert model.get_layer('pool2').output.shape[1:3] == (8, 8)
  assert model.get_layer('dropout1').rate == 0.5
  hidden = [model.get_layer(n) for n in models.hidden_layer_names()]
  assert all(isinstance(l, layers.NormPropConv2D) for l in hidden)
  assert all(l.activation == 'relu' and l.padding == 'same' for l in hidden)
  bn = models.nin('batchnorm')
  assert not bn.get_layer('conv1').use_bias
  assert isinstance(bn.get_layer('conv1_bn'), keras.layers.BatchNormalization)


@pytest.mark.parametrize('norm', models.NORMS)
def test_probe_model_exposes_every_hidden_layer(norm):
  keras.utils.set_random_seed(0)
  model = models.nin(norm, width=0.25)
  probe = models.probe_model(model)
  x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(
      'float32')
  out = probe(x)
  names = models.hidden_layer_names()
  assert set(out) == {f'{n}/{k}' for n in names
                      for k in ('normalized', 'preactivation', 'output')} | {
                          'logits'}
  np.testing.assert_allclose(out['logits'], model(x), rtol=1e-5, atol=1e-6)
  if norm == 'normprop':
    # conv1's output is (relu(pre) - c1) / c2, and pre = gamma z + beta.
    layer = model.get_layer('conv1')
    pre, z = out['conv1/preactivation'], out['conv1/normalized']
    np.testing.assert_allclose(
        pre, layer.gamma.numpy() * z + layer.beta.numpy(), rtol=1e-4,
        atol=1e-5)
    np.testing.assert_allclose(
        out['conv1/output'], (np.maximum(pre, 0) - 0.3989422804014327) /
        0.5838193701035489, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('options', [
    dict(), dict(dropout=0.5), dict(pool_correction=0.3),
    dict(classifier='plain'), dict(activation='leaky_relu:0.1'),
    dict(activation='tanh')])
def test_absorbed_shifts_compute_the_same_function(options):
  """nin(absorb_shifts=True) == nin(absorb_shifts=False) on equal weights:
  max error over max |logit| below 1e-6 (float32 rounding of reordered
  sums; a missed or doubled c1/c2 ~ 0.68 per unit is off by 1e-1 or more),
  with no centring pass left in a hidden layer when the activation allows."""
  x = np.random.default_rng(2).standard_normal((4, 32, 32, 3)).astype(
      'float32')
  keras.utils.set_random_seed(2)
  centred = models.nin('normprop', width=0.25, absorb_shifts=False, **options)
  absorbed = models.nin('normprop', width=0.25, **options)
  rng = np.random.default_rng(3)
  weights = [w + 0.1 * rng.standard_normal(w.shape).astype(w.dtype)
             for w in centred.get_weights()]
  centred.set_weights(weights)
  absorbed.set_weights(weights)
  want = np.asarray(centred(x, training=False), np.float64)
  got = np.asarray(absorbed(x, training=False), np.float64)
  assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-6
  hidden = [absorbed.get_layer(n) for n in models.hidden_layer_names()]
  homogeneous = options.get('activation', 'relu') != 'tanh'
  assert [l.center_output for l in hidden] == [not homogeneous] * 8
  assert all(l.center_output for l in (centred.get_layer(n) for n in
                                       models.hidden_layer_names()))


def test_nin_batch_independence_and_train_equals_inference():
  keras.utils.set_random_seed(1)
  model = models.nin('normprop', width=0.25)
  batch = np.random.default_rng(1).standard_normal((128, 32, 32, 3)).astype(
      'float32')
  together = model(batch, training=False).numpy()
  for i in (0, 99):
    alone = model(batch[i:i + 1], training=False).numpy()
    np.testing.assert_allclose(alone[0], together[i], rtol=0, atol=1e-6)
  np.testing.assert_array_equal(model(batch, training=True).numpy(), together)


@pytest.mark.parametrize('bad,arg', [
    (dict(norm='layernorm'), 'norm'),
    (dict(num_classes=1), 'num_classes'),
    (dict(width=0), 'width'),
    (dict(dropout=1.0), 'dropout'),
    (dict(activation='bogus'), 'activation'),
    (dict(norm='batchnorm', activation='bogus'), 'activation'),
    (dict(input_shape=(32, 32)), 'input_shape'),
    (dict(absorb_shifts='yes'), 'absorb_shifts'),
])
def test_nin_bad_arguments(bad, arg):
  with pytest.raises(ValueError, match=f'Received: {arg}='):
    models.nin(**bad)


_LAYER_CASES = [
    (lambda: layers.NormPropDense(6, activation='gelu',
                                  gamma_initializer='ones'), (3, 5)),
    (lambda: layers.NormPropDense(6, activation=None,
                                  weight_norm_divisor=1.21), (3, 5)),
    (lambda: layers.NormPropConv2D(4, (3, 1), strides=2, padding='valid',
                                   activation='leaky_relu:0.1'), (2, 7, 7, 3)),
    (lambda: layers.WeightNormDense(6, activation='tanh'), (3, 5)),
    (lambda: layers.WeightNormConv2D(4, 3, activation=None), (2, 7, 7, 3)),
]


@pytest.mark.parametrize('make,shape', _LAYER_CASES)
def test_layer_config_round_trip(make, shape):
  layer = make()
  clone = type(layer).from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  x = np.random.default_rng(2).standard_normal(shape).astype('float32')
  layer(x)
  clone(x)
  clone.set_weights(layer.get_weights())
  np.testing.assert_array_equal(clone(x), layer(x))


@pytest.mark.parametrize('make,shape', _LAYER_CASES)
def test_layer_keras_file_round_trip(make, shape, tmp_path):
  x = np.random.default_rng(3).standard_normal(shape).astype('float32')
  model = keras.Sequential([keras.Input(shape[1:]), make()])
  rng = np.random.default_rng(4)
  model.set_weights([rng.standard_normal(w.shape) for w in
                     model.get_weights()])
  model.save(tmp_path / 'layer.keras')
  loaded = keras.saving.load_model(tmp_path / 'layer.keras')
  assert type(loaded.layers[0]) is type(model.layers[0])
  np.testing.assert_array_equal(loaded(x), model(x))


@pytest.mark.parametrize('norm', models.NORMS)
def test_nin_keras_file_round_trip(norm, tmp_path):
  keras.utils.set_random_seed(5)
  model = models.nin(norm, width=0.25, dropout=0.3)
  x = np.random.default_rng(5).standard_normal((4, 32, 32, 3)).astype(
      'float32')
  model.save(tmp_path / 'nin.keras')
  loaded = keras.saving.load_model(tmp_path / 'nin.keras')
  np.testing.assert_array_equal(loaded(x), model(x))
  assert models.norm_kind(loaded) == norm


def test_trains_at_batch_size_one():
  """300 SGD steps at batch size 1 halve the loss of a seeded 4-class task.

  Measured: the loss on the 300 examples goes from 1.574 to 0.285.
  """
  keras.utils.set_random_seed(6)
  rng = np.random.default_rng(6)
  centers = rng.standard_normal((4, 16)) * 1.5
  y = rng.integers(0, 4, 300)
  x = (centers[y] + rng.standard_normal((300, 16))).astype('float32')
  x = (x - x.mean(0)) / x.std(0)  # Standardized input, as NormProp assumes.
  model = keras.Sequential([
      keras.Input((16,)),
      layers.NormPropDense(32),
      layers.NormPropDense(32),
      layers.NormPropDense(4, activation=None),
  ])
  model.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  before = model.evaluate(x, y, verbose=0)
  model.fit(x, y, batch_size=1, epochs=1, shuffle=True, verbose=0)
  after = model.evaluate(x, y, verbose=0)
  print(f"batch-1 loss: {before:.3f} -> {after:.3f}")
  assert after <= 0.5 * before, (before, after)
