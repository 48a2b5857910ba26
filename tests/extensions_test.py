"""The opt-in extensions beyond the paper's recipe, and their numbers.

- `pooling.pooled_moments`: the mean and std of a pooled NormProp output
  under equicorrelated standard-normal pre-activations, against a seeded
  Monte Carlo of 10^6 windows (within 4 standard errors).
- `layers.PoolingCorrection`: its numerics against NumPy (float64 1e-12,
  float32 1e-6), that it restores mean 0 and std 1 on windows drawn under its
  assumption (within 0.01), serialization, argument errors.
- `models.nin`'s extension options (gamma_init, classifier, classifier_gamma,
  pool_correction): they build what they say, round-trip through .keras, and
  fold to standard layers exactly (1e-5).
"""

import math

import keras
import numpy as np
import pytest

from normprop_tf import activations
from normprop_tf import export
from normprop_tf import layers
from normprop_tf import models
from normprop_tf import pooling

_WINDOWS = 1_000_000


def _windows(rho, taps, seed=0):
  """Equicorrelated standard-normal pre-activations, [windows, taps]."""
  rng = np.random.default_rng(seed)
  shared = rng.standard_normal((_WINDOWS, 1))
  return math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.standard_normal(
      (_WINDOWS, taps))


def _normalized(name, u):
  m = activations.moments(name)
  return (activations.numpy_fn(name)(u) - m.mean) / m.std


@pytest.mark.parametrize('name,pool,rho', [
    ('relu', 'max', 0.0), ('relu', 'max', 0.3), ('relu', 'avg', 0.0),
    ('relu', 'avg', 0.5), ('tanh', 'avg', 0.5), ('tanh', 'max', 0.3),
    ('leaky_relu:0.1', 'max', 0.0), ('gelu', 'avg', 0.3)])
def test_pooled_moments_match_monte_carlo(name, pool, rho):
  o = _normalized(name, _windows(rho, 9))
  pooled = o.max(axis=1) if pool == 'max' else o.mean(axis=1)
  want = pooling.pooled_moments(name, pool, 9, rho)
  se_mean = pooled.std() / math.sqrt(_WINDOWS)
  se_std = pooled.std() / math.sqrt(2 * _WINDOWS) * 2  # Heavier tails: x2.
  assert abs(pooled.mean() - want.mean) <= 4 * se_mean + 1e-12, (
      pooled.mean(), want)
  assert abs(pooled.std() - want.std) <= 4 * se_std, (pooled.std(), want)


def test_pooled_moments_known_values():
  # Average of 9 independent unit-variance values: std 1/3, exactly.
  assert pooling.pooled_moments('relu', 'avg', 9, 0.0).std == pytest.approx(
      1 / 3, abs=1e-15)
  # One tap: pooling changes nothing.
  one = pooling.pooled_moments('relu', 'max', 1, 0.0)
  assert (one.mean, one.std) == pytest.approx((0.0, 1.0), abs=1e-8)
  # ReLU, 3x3, independent: the values quoted in the layer's docstring.
  mx = pooling.pooled_moments('relu', 'max', 9, 0.0)
  assert (round(mx.mean, 3), round(mx.std, 3)) == (1.861, 1.023)


def test_correction_restores_unit_statistics_under_its_assumption():
  rho = 0.3
  u = _windows(rho, 9, seed=1).reshape(_WINDOWS, 3, 3, 1).astype('float32')
  o = _normalized('relu', u)
  for pool, kind in ((keras.layers.MaxPooling2D(3), 'max'),
                     (keras.layers.AveragePooling2D(3), 'avg')):
    y = np.asarray(layers.PoolingCorrection(kind, 3, 'relu', rho)(pool(o)))
    assert abs(y.mean()) < 0.01 and abs(y.std() - 1) < 0.01, (kind, y.mean(),
                                                               y.std())


@pytest.mark.parametrize('dtype,tol', [('float64', 1e-12), ('float32', 1e-6)])
def test_correction_numerics(dtype, tol):
  x = np.random.default_rng(2).standard_normal((2, 5, 5, 4)).astype(dtype)
  layer = layers.PoolingCorrection('avg', (3, 3), 'relu', 0.4, dtype=dtype)
  moments = pooling.pooled_moments('relu', 'avg', 9, 0.4)
  np.testing.assert_allclose(np.asarray(layer(x)),
                             (x.astype(np.float64) - moments.mean) /
                             moments.std, rtol=tol, atol=tol)


def test_correction_config_and_errors(tmp_path):
  layer = layers.PoolingCorrection('max', 3, 'relu', 0.3, name='fix')
  config = layer.get_config()
  assert {k: config[k] for k in ('pool', 'pool_size', 'activation',
                                 'correlation')} == {
                                     'pool': 'max', 'pool_size': (3, 3),
                                     'activation': 'relu', 'correlation': 0.3}
  clone = layers.PoolingCorrection.from_config(config)
  assert (clone.mean, clone.std) == (layer.mean, layer.std)
  with pytest.raises(ValueError, match="Received: pool='min'"):
    layers.PoolingCorrection('min')
  with pytest.raises(ValueError, match='Received: correlation=0.99'):
    layers.PoolingCorrection('max', 3, 'relu', 0.99)
  with pytest.raises(ValueError, match="nondecreasing.*activation='gelu'"):
    layers.PoolingCorrection('max', 3, 'gelu')


def _set_random_gamma_beta(model, seed=0):
  rng = np.random.default_rng(seed)
  model.set_weights([w + 0.2 * rng.standard_normal(w.shape).astype(w.dtype)
                     if w.ndim == 1 else w for w in model.get_weights()])


def test_nin_extension_options_build_what_they_say(tmp_path):
  keras.utils.set_random_seed(0)
  model = models.nin('normprop', width=0.1, gamma_init=1.0,
                     classifier_gamma=8.0, pool_correction=0.3)
  for i in range(1, 9):
    np.testing.assert_array_equal(
        model.get_layer(f'conv{i}').gamma.numpy(), 1.0)
  np.testing.assert_array_equal(model.get_layer('classifier').gamma.numpy(),
                                8.0)
  corrections = [l for l in model.layers
                 if isinstance(l, layers.PoolingCorrection)]
  assert [(c.name, c.pool) for c in corrections] == [
      ('pool1_correction', 'max'), ('pool2_correction', 'avg')]
  plain = models.nin('normprop', width=0.1, classifier='plain')
  assert type(plain.get_layer('classifier')) is keras.layers.Conv2D
  assert isinstance(plain.get_layer('conv8'), layers.NormPropConv2D)
  # The default is the paper's network: no correction, gamma 1/1.21.
  default = models.nin('normprop', width=0.1)
  assert not [l for l in default.layers
              if isinstance(l, layers.PoolingCorrection)]
  np.testing.assert_allclose(default.get_layer('conv1').gamma.numpy(),
                             1 / 1.21)
  _set_random_gamma_beta(model)
  x = np.random.default_rng(1).standard_normal((3, 32, 32, 3)).astype(
      'float32')
  model.save(tmp_path / 'm.keras')
  loaded = keras.saving.load_model(tmp_path / 'm.keras')
  np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
  # Folded: standard layers only, the same function.
  folded = export.fold(model)
  assert not [l for l in folded.layers
              if type(l).__module__.startswith('normprop_tf')]
  want = np.asarray(model(x))
  np.testing.assert_allclose(np.asarray(folded(x)), want, rtol=1e-5,
                             atol=1e-5 * np.abs(want).max())
  folded_plain = export.fold(plain)
  np.testing.assert_allclose(np.asarray(folded_plain(x)),
                             np.asarray(plain(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('kwargs,match', [
    (dict(norm='batchnorm', pool_correction=0.0), 'pool_correction'),
    (dict(norm='weightnorm', gamma_init=1.0), 'gamma_init'),
    (dict(norm='batchnorm', classifier_gamma=2.0), 'classifier_gamma'),
    (dict(norm='normprop', classifier='dense'), "classifier='dense'"),
    (dict(norm='normprop', pool_correction=1.5), 'pool_correction=1.5'),
])
def test_nin_extension_options_are_checked(kwargs, match):
  with pytest.raises(ValueError, match=match):
    models.nin(width=0.1, **kwargs)
