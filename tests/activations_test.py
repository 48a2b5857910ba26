"""Post-activation moments: closed forms, quadrature vs Monte Carlo, errors."""

import math

import numpy as np
import pytest
from scipy import special

from normprop_tf import activations

_N = 10_000_000  # Monte Carlo samples: standard errors of ~3e-4.


@pytest.fixture(scope='module')
def z():
  return np.random.default_rng(20160301).standard_normal(_N)


def test_relu_closed_form():
  m = activations.moments('relu')
  assert abs(m.mean - 1 / math.sqrt(2 * math.pi)) < 1e-12
  assert abs(m.mean - 0.3989422804014327) < 1e-12
  assert abs(m.std - math.sqrt((1 - 1 / math.pi) / 2)) < 1e-12
  assert abs(m.std - 0.5838193701035489) < 1e-12
  # docs/method.md: Jacobian-preserving gamma0 = 0.8256; the paper rounds to
  # 1/1.21.
  assert abs(m.gamma0 - 0.8256) < 1e-4
  assert activations.default_gamma('relu') == 1 / 1.21


def test_leaky_relu_closed_form_reduces_to_relu_and_identity():
  relu, lin = activations.moments('relu'), activations.moments('identity')
  at0 = activations.moments('leaky_relu:0')
  assert abs(at0.mean - relu.mean) < 1e-12 and abs(at0.std - relu.std) < 1e-12
  near1 = activations.moments('leaky_relu:0.999999')
  assert abs(near1.mean - lin.mean) < 1e-6 and abs(near1.std - 1) < 1e-6
  assert activations.moments('leaky_relu') == activations.moments(
      'leaky_relu:0.2')


# NumPy forms written here, independently of the module under test.
_SELU_A, _SELU_S = 1.6732632423543772, 1.0507009873554805
_MC_FNS = {
    'leaky_relu:0.1': (lambda z: np.where(z > 0, z, 0.1 * z),
                       lambda z: np.where(z > 0, 1.0, 0.1)),
    'elu': (lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
            lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0)))),
    'selu': (lambda z: _SELU_S * np.where(
        z > 0, z, _SELU_A * np.expm1(np.minimum(z, 0))),
             lambda z: _SELU_S * np.where(
                 z > 0, 1.0, _SELU_A * np.exp(np.minimum(z, 0)))),
    'gelu': (lambda z: z * special.ndtr(z),
             lambda z: special.ndtr(z) + z * np.exp(-z * z / 2) /
             math.sqrt(2 * math.pi)),
    'silu': (lambda z: z * special.expit(z),
             lambda z: special.expit(z) * (1 + z * (1 - special.expit(z)))),
    'softplus': (lambda z: np.logaddexp(0, z), special.expit),
    'tanh': (np.tanh, lambda z: 1 - np.tanh(z)**2),
    'sigmoid': (special.expit,
                lambda z: special.expit(z) * (1 - special.expit(z))),
    'identity': (lambda z: z, np.ones_like),
}


@pytest.mark.parametrize('name', sorted(_MC_FNS))
def test_moments_match_monte_carlo_within_3_standard_errors(name, z):
  """c1, c2 and E f'(z)^2 vs a seeded 10^7-sample Monte Carlo.

  Standard errors: sd/sqrt(n) for means; for the std, the delta method
  sqrt((m4 - var^2) / (4 var n)) with m4 the 4th central moment.
  """
  f, df = _MC_FNS[name]
  fz = f(z)
  m = activations.moments(name)
  mean, var = fz.mean(), fz.var()
  se_mean = math.sqrt(var / _N)
  assert abs(m.mean - mean) <= 3 * se_mean + 1e-12, (m.mean, mean, se_mean)
  m4 = np.mean((fz - mean)**4)
  se_std = math.sqrt(max(m4 - var**2, 0) / (4 * var * _N))
  assert abs(m.std - math.sqrt(var)) <= 3 * se_std + 1e-12, (
      m.std, math.sqrt(var), se_std)
  g2 = df(z)**2
  se_g2 = math.sqrt(g2.var() / _N)
  implied_g2 = m.std**2 / m.gamma0**2
  assert abs(implied_g2 - g2.mean()) <= 3 * se_g2 + 1e-12, (
      implied_g2, g2.mean(), se_g2)


@pytest.mark.parametrize('name,c1,c2,gamma0', [
    # 4-decimal values of an earlier table; the quadrature's (docs/method.md)
    # agree to ~1e-3.
    ('tanh', 0.0, 0.6277, 0.9208),
    ('sigmoid', 0.5, 0.2083, 0.9830),
])
def test_spec_table(name, c1, c2, gamma0):
  m = activations.moments(name)
  assert abs(m.mean - c1) < 1e-9
  assert abs(m.std - c2) < 1e-3
  assert abs(m.gamma0 - gamma0) < 1e-3


def test_selu_is_self_normalizing():
  m = activations.moments('selu')
  assert abs(m.mean) < 1e-9 and abs(m.std - 1) < 1e-9


def test_aliases_and_cache():
  assert activations.moments('swish') == activations.moments('silu')
  assert activations.moments('linear') == activations.moments('identity')
  assert activations.moments('gelu') is activations.moments('GELU')


@pytest.mark.parametrize('bad', ['mish', '', 'leaky_relu:x', 'leaky_relu:1.5'])
def test_unknown_activation_lists_supported(bad):
  with pytest.raises(ValueError) as e:
    activations.moments(bad)
  assert f'Received: activation={bad!r}' in str(e.value)
  if bad == 'mish':
    for name in ('relu', 'gelu', 'selu', 'tanh', 'sigmoid', 'identity'):
      assert name in str(e.value)
