"""Moments of NormProp outputs after pooling: an opt-in extension.

The paper pools NormProp's normalized outputs o = (f(u) - c1) / c2 with no
correction, so the layer after a pool no longer sees zero-mean, unit-variance
input: max pooling raises the mean (the maximum of 9 standardized ReLU
outputs has mean ~1.87), average pooling shrinks the variance. This module
computes, from the activation alone, the mean and standard deviation of a
pooled output, so that `layers.PoolingCorrection` can restore (0, 1):

    y = (pool(o) - mean) / std

The assumption: inside one pooling window of n taps the pre-activations
u_1..u_n are standard normal and equicorrelated with correlation rho
(rho = 0: independent). This is NormProp's own assumption about each unit,
extended to the window; `rho` is the one number a user may set from what
they know of their inputs (neighbouring pixels of natural images are
positively correlated, which makes the maximum smaller and the average less
concentrated than under independence). Border windows of 'same' pooling
have fewer taps; the interior's constants are used everywhere, as NormProp
ignores zero padding elsewhere.

- Max pooling (monotone f only): max_k f(u_k) = f(M) with
  M = sqrt(rho) Z + sqrt(1 - rho) E, Z ~ N(0, 1) and E the maximum of n
  independent standard normals (density n phi(e) Phi(e)^(n-1)). The density
  of M is a Gauss-Hermite mixture over Z; E[g(M)] is integrated on both
  sides of f's kink at 0 with Gauss-Legendre rules.
- Average pooling: the mean is 0 and the variance is
  (1 + (n - 1) r) / n, with r = Corr(f(u_i), f(u_j)) for Corr(u_i, u_j) = rho
  (0 when rho = 0; closed form for ReLU, quadrature otherwise).

Everything is computed once per (activation, pool, taps, rho) in float64
and cached. NumPy only; no backend.
"""

import dataclasses
import functools
import math

import numpy as np

from normprop_tf import activations
from normprop_tf.utils import checks

POOLS = ('max', 'avg')
MAX_CORRELATION = 0.95
# Max pooling needs f(max u) = max f(u), i.e. a nondecreasing activation.
_MONOTONE = ('relu', 'leaky_relu', 'elu', 'selu', 'softplus', 'tanh',
             'sigmoid', 'identity')
_NODES = 256
_RANGE = 12.0


@dataclasses.dataclass(frozen=True)
class PooledMoments:
  """Mean and standard deviation of one pooled NormProp output."""
  mean: float
  std: float


def _phi(z):
  return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _cdf(z):
  return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


@functools.lru_cache(maxsize=1)
def _hermite():
  z, w = np.polynomial.hermite_e.hermegauss(128)
  return z, w / math.sqrt(2.0 * math.pi)


@functools.lru_cache(maxsize=1)
def _split_rule():
  """Gauss-Legendre nodes and weights on [-12, 0] and [0, 12]."""
  x, w = np.polynomial.legendre.leggauss(_NODES)
  right = 0.5 * _RANGE * (x + 1.0)
  weights = 0.5 * _RANGE * w
  return np.concatenate([-right, right]), np.concatenate([weights, weights])


def _max_density(m, taps, rho):
  """Density of M = sqrt(rho) Z + sqrt(1 - rho) E at the points `m`."""
  a, b = math.sqrt(rho), math.sqrt(1.0 - rho)
  max_density = lambda e: taps * _phi(e) * _cdf(e)**(taps - 1)
  if a == 0.0:
    return max_density(m)
  z, w = _hermite()
  e = (m[:, None] - a * z[None, :]) / b
  return np.sum(w[None, :] * max_density(e), axis=1) / b


def _max_moments(f, c1, c2, taps, rho):
  m, w = _split_rule()
  weights = w * _max_density(m, taps, rho)
  o = (f(m) - c1) / c2
  mean = float(np.sum(weights * o))
  var = float(np.sum(weights * (o - mean)**2))
  return mean, var


def _output_correlation(name, f, c1, c2, rho):
  """Corr(o_i, o_j) of two outputs whose pre-activations have corr rho."""
  if rho == 0.0:
    return 0.0
  key = activations.canonical_name(name)
  if key == 'relu':  # The arc-cosine kernel (Cho and Saul, 2009).
    second = (math.sqrt(1 - rho**2) + rho * (math.pi - math.acos(rho))) / (
        2 * math.pi)
    return (second - c1**2) / c2**2
  x, wx = _split_rule()
  y, wy = _split_rule()
  s = math.sqrt(1.0 - rho**2)
  # E[f(X) f(Y)] = E_X[f(X) E[f(Y) | X]], Y | X = x ~ N(rho x, s^2); both
  # integrals are split at f's kink (0).
  conditional = _phi((y[None, :] - rho * x[:, None]) / s) / s
  inner = np.sum(wy[None, :] * f(y)[None, :] * conditional, axis=1)
  wx = wx * _phi(x)
  second = float(np.sum(wx * f(x) * inner))
  return (second - c1**2) / c2**2


@functools.lru_cache(maxsize=None)
def _cached(name, pool, taps, rho):
  m = activations.moments(name)
  f = activations.numpy_fn(name)
  if pool == 'max':
    mean, var = _max_moments(f, m.mean, m.std, taps, rho)
    return PooledMoments(mean, math.sqrt(var))
  r = _output_correlation(name, f, m.mean, m.std, rho)
  return PooledMoments(0.0, math.sqrt((1.0 + (taps - 1) * r) / taps))


def pooled_moments(activation='relu', pool='max', taps=9, correlation=0.0):
  """Mean and std of a pooled NormProp output (see the module docstring).

  Args:
    activation: the NormProp layer's activation (`activations.SUPPORTED`);
      max pooling needs a nondecreasing one.
    pool: 'max' or 'avg'.
    taps: values per pooling window (9 for 3x3).
    correlation: rho, the assumed correlation of the pre-activations inside
      a window, in [0, 0.95].

  Returns:
    A `PooledMoments`.

  Raises:
    ValueError: an unknown pool or activation, a non-monotone activation
      with max pooling, or values out of range, naming the argument.
  """
  name = activations.canonical_name(activation)
  if pool not in POOLS:
    raise checks.ArgumentError(f'`pool` must be one of {POOLS}. Received: pool={pool!r}')
  if isinstance(taps, bool) or not isinstance(taps, int) or taps < 1:
    raise checks.ArgumentError(f'`taps` must be a positive integer. Received: '
                     f'taps={taps!r}')
  if isinstance(correlation, bool) or not isinstance(
      correlation, (int, float)) or not 0.0 <= correlation <= MAX_CORRELATION:
    raise checks.ArgumentError(f'`correlation` must be a number in [0, '
                     f'{MAX_CORRELATION}]. Received: '
                     f'correlation={correlation!r}')
  if pool == 'max' and name.split(':')[0] not in _MONOTONE:
    raise checks.ArgumentError(
        'Max pooling commutes with the activation only if it is '
        f'nondecreasing ({", ".join(_MONOTONE)}). Received: '
        f'activation={activation!r}')
  return _cached(name, pool, int(taps), float(correlation))


__all__ = ['pooled_moments', 'PooledMoments', 'POOLS', 'MAX_CORRELATION']
