"""Post-activation moments for Normalization Propagation.

NormProp assumes every pre-activation is N(0, 1) (after gamma and beta) and
re-normalizes the activation output with its known moments:

    o = (f(u) - c1) / c2,    c1 = E f(z),  c2 = Std f(z),  z ~ N(0, 1).

It also gives the Jacobian-preserving gamma initialization

    gamma0 = sqrt(Var f(z) / E[f'(z)^2]),

under which each layer's Jacobian has an RMS singular value of ~1. For ReLU
this is 0.8256, which the paper rounds to 1/1.21 = 0.8264.

ReLU, leaky ReLU and identity have closed forms. The others use Gauss-Hermite
quadrature (probabilists' Hermite, 128 nodes) computed once per activation
and cached. ELU and SELU have a kink at 0, where Gauss-Hermite converges
slowly; they are split at 0 and each half-line is integrated with a 128-node
Gauss-Legendre rule instead (see `_half_line_rule`).

This module imports NumPy and Keras only (no TensorFlow), so it works under
any Keras 3 backend.
"""

import dataclasses
import functools
import math
from typing import Callable

import numpy as np
from keras import ops

from normprop_tf.utils import checks

# Closed-form ReLU constants (docs/method.md, "A hidden layer").
RELU_MEAN = math.sqrt(1.0 / (2.0 * math.pi))  # 0.3989422804014327
RELU_STD = math.sqrt((1.0 - 1.0 / math.pi) / 2.0)  # 0.5838193701035489
# The authors' code divides by 1.21 * ||W|| with gamma = 1 (docs/method.md,
# "The 1.21 factor").
PAPER_RELU_GAMMA = 1.0 / 1.21

_NUM_NODES = 128  # Gauss-Hermite nodes per half-line (>= 64 for ~1e-12).
_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805
_DEFAULT_LEAKY_SLOPE = 0.2  # Keras' default negative_slope.


@dataclasses.dataclass(frozen=True)
class Moments:
  """Moments of f(z) for z ~ N(0, 1).

  Attributes:
    mean: c1 = E f(z).
    std: c2 = Std f(z).
    gamma0: sqrt(Var f(z) / E f'(z)^2), the Jacobian-preserving gamma init.
  """
  mean: float
  std: float
  gamma0: float


def _normal_cdf(z):
  return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


def _normal_pdf(z):
  return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _sigmoid(z):
  return 0.5 * (1.0 + np.tanh(0.5 * z))


def _elu(z, alpha=1.0):
  return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))


def _elu_grad(z, alpha=1.0):
  return np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0.0)))


# name -> (f, f', kinked at 0?). NumPy float64 forms for the quadrature.
_NUMPY_FNS = {
    'elu': (_elu, _elu_grad, True),
    'selu': (lambda z: _SELU_SCALE * _elu(z, _SELU_ALPHA),
             lambda z: _SELU_SCALE * _elu_grad(z, _SELU_ALPHA), True),
    'gelu': (lambda z: z * _normal_cdf(z),
             lambda z: _normal_cdf(z) + z * _normal_pdf(z), False),
    'silu': (lambda z: z * _sigmoid(z),
             lambda z: _sigmoid(z) * (1.0 + z * (1.0 - _sigmoid(z))), False),
    'softplus': (lambda z: np.logaddexp(0.0, z), _sigmoid, False),
    'tanh': (np.tanh, lambda z: 1.0 - np.tanh(z)**2, False),
    'sigmoid': (_sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z)), False),
}

# name -> keras.ops form, used inside layers.
_KERAS_FNS = {
    'relu': ops.relu,
    'elu': ops.elu,
    'selu': ops.selu,
    # Exact GELU via erf: tf.nn.gelu's float64 path is off by ~5e-9.
    'gelu': lambda x: 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0)))),
    'silu': ops.silu,
    'softplus': ops.softplus,
    'tanh': ops.tanh,
    'sigmoid': ops.sigmoid,
    'identity': lambda x: x,
}

_ALIASES = {'swish': 'silu', 'linear': 'identity'}

SUPPORTED = tuple(sorted(
    list(_KERAS_FNS) + ['leaky_relu', 'leaky_relu:<slope>'] + list(_ALIASES)))


def _parse(name):
  """Returns (canonical name, leaky slope or None); raises on unknown names."""
  if not isinstance(name, str):
    raise checks.ArgumentError(
        f'`activation` must be a string naming one of {SUPPORTED}. '
        f'Received: activation={name!r}')
  key = name.strip().lower()
  key = _ALIASES.get(key, key)
  if key == 'leaky_relu':
    return key, _DEFAULT_LEAKY_SLOPE
  if key.startswith('leaky_relu:'):
    try:
      slope = float(key.split(':', 1)[1])
    except ValueError:
      slope = float('nan')
    if not 0.0 <= slope < 1.0:
      raise checks.ArgumentError(
          'The leaky_relu slope must be a number in [0, 1), written as '
          f"'leaky_relu:0.1'. Received: activation={name!r}")
    return 'leaky_relu', slope
  if key not in _KERAS_FNS:
    raise checks.ArgumentError(
        f'Unknown activation. Supported: {", ".join(SUPPORTED)}. '
        f'Received: activation={name!r}')
  return key, None


def canonical_name(name):
  """Normalizes an activation name ('swish' -> 'silu', 'leaky_relu:0.1')."""
  key, slope = _parse(name)
  return f'leaky_relu:{slope:g}' if key == 'leaky_relu' else key


@functools.lru_cache(maxsize=1)
def _half_line_rule():
  """Gauss-Legendre rule for E[g(z) 1(z > 0)] with z ~ N(0, 1).

  Full-line Gauss-Hermite converges only algebraically across a kink: with
  128 nodes SELU's mean is off by 9e-4 (measured), larger than the 10^7-sample
  Monte Carlo error the tests hold us to. Split at 0 and integrate each half
  on [0, 12], where the Gaussian tail beyond 12 sigma (< 2e-33) is
  negligible; each half is then smooth and the rule exact to ~1e-15.
  """
  nodes, weights = np.polynomial.legendre.leggauss(_NUM_NODES)
  upper = 12.0
  z = 0.5 * upper * (nodes + 1.0)
  w = 0.5 * upper * weights * _normal_pdf(z)
  return z, w


@functools.lru_cache(maxsize=1)
def _full_line_rule():
  """Probabilists' Gauss-Hermite rule: E g(z) ~= sum(w * g(z))."""
  z, w = np.polynomial.hermite_e.hermegauss(_NUM_NODES)
  return z, w / math.sqrt(2.0 * math.pi)


def _expect(g, kinked):
  if kinked:
    z, w = _half_line_rule()
    return float(np.sum(w * g(z)) + np.sum(w * g(-z)))
  z, w = _full_line_rule()
  return float(np.sum(w * g(z)))


@functools.lru_cache(maxsize=None)
def _moments_cached(key, slope):
  if key == 'relu':
    return Moments(RELU_MEAN, RELU_STD,
                   math.sqrt(RELU_STD**2 / 0.5))
  if key == 'leaky_relu':
    # f(z) = slope * z + (1 - slope) * relu(z).
    mean = (1.0 - slope) * RELU_MEAN
    second = (1.0 + slope**2) / 2.0
    var = second - mean**2
    return Moments(mean, math.sqrt(var), math.sqrt(var / second))
  if key == 'identity':
    return Moments(0.0, 1.0, 1.0)
  f, df, kinked = _NUMPY_FNS[key]
  mean = _expect(f, kinked)
  var = _expect(lambda z: (f(z) - mean)**2, kinked)
  grad_sq = _expect(lambda z: df(z)**2, kinked)
  return Moments(mean, math.sqrt(var), math.sqrt(var / grad_sq))


def moments(name):
  """Returns the `Moments` (c1, c2, gamma0) of activation `name`.

  Args:
    name: one of `SUPPORTED`. Leaky ReLU takes its slope as
      'leaky_relu:0.1' (plain 'leaky_relu' means Keras' default 0.2).

  Raises:
    ValueError: for an unknown name; the message lists the supported ones.
  """
  return _moments_cached(*_parse(name))


def keras_fn(name) -> Callable:
  """Returns the `keras.ops` implementation of activation `name`."""
  key, slope = _parse(name)
  if key == 'leaky_relu':
    # max(x, a x) for 0 <= a < 1; tf.nn.leaky_relu rounds a to float32.
    return lambda x: ops.maximum(x, slope * x)
  return _KERAS_FNS[key]


def numpy_fn(name) -> Callable:
  """Returns a float64 NumPy implementation of `name` (used by tests)."""
  key, slope = _parse(name)
  if key == 'relu':
    return lambda z: np.maximum(z, 0.0)
  if key == 'leaky_relu':
    return lambda z: np.where(z > 0, z, slope * z)
  if key == 'identity':
    return lambda z: z
  return _NUMPY_FNS[key][0]


def is_positively_homogeneous(name):
  """True if f(a * x) = a * f(x) for a > 0 (ReLU, leaky ReLU, identity).

  For these, the 1/c2 factor can be folded into the kernel scale and beta,
  which removes one elementwise pass over the activations.
  """
  return _parse(name)[0] in ('relu', 'leaky_relu', 'identity')


def default_gamma(name):
  """The default gamma initial value: 1/1.21 for ReLU (paper), else gamma0."""
  key, _ = _parse(name)
  return PAPER_RELU_GAMMA if key == 'relu' else moments(name).gamma0


__all__ = [
    'Moments', 'moments', 'keras_fn', 'numpy_fn', 'default_gamma',
    'canonical_name', 'is_positively_homogeneous', 'SUPPORTED', 'RELU_MEAN',
    'RELU_STD', 'PAPER_RELU_GAMMA'
]
