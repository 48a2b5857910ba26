"""Kernel initializers for weight-normalized layers."""

import keras
from keras import ops

from normprop_tf.utils import checks


@keras.saving.register_keras_serializable(package='normprop_tf')
class UnitNormOrthogonal(keras.initializers.Initializer):
  """Orthogonal initializer rescaled so every unit's weight vector has norm 1.

  A weight-normalized kernel's effective learning rate is about
  lr / ||W_i||^2. Glorot's first NIN conv (5x5x3 -> 192) has ||W_i||^2 ~ 0.03,
  a 30x larger step there, and a full-width NormProp NIN diverged with it
  (docs/method.md, "Learning rate and initialization"). Unit norms make the step lr-sized in every layer.
  Orthogonal columns also best fit NormProp's incoherence assumption. When
  fan-in < units the orthogonal rows are kept and each column is rescaled.

  Args:
    seed: int or None, as for `keras.initializers.Orthogonal`.
  """

  def __init__(self, seed=None):
    if seed is not None and (isinstance(seed, bool) or
                             not isinstance(seed, int)):
      raise checks.ArgumentError(
          f'`seed` must be an int or None. Received: seed={seed!r}')
    self.seed = seed

  def __call__(self, shape, dtype=None):
    w = keras.initializers.Orthogonal(seed=self.seed)(shape, dtype=dtype)
    axes = tuple(range(len(shape) - 1))
    return w / ops.sqrt(ops.sum(ops.square(w), axis=axes, keepdims=True))

  def get_config(self):
    return {'seed': self.seed}
