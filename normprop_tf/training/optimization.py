"""The optimizer and its learning-rate schedule, from their configs.

Keras only (no TensorFlow), so the TensorFlow training loop and the
Keras-only runner (`normprop_tf.fit`) build exactly the same SGD.
"""

import keras


def learning_rate_schedule(schedule, learning_rate, total_steps):
  """A constant, or a step decay by `decay_factor` at fractions of training.

  Args:
    schedule: a `ScheduleConfig`.
    learning_rate: the initial rate.
    total_steps: the run's length, which `decay_at` is a fraction of.

  Returns:
    A float, or a `keras.optimizers.schedules.PiecewiseConstantDecay`.
  """
  if schedule.kind == 'constant':
    return learning_rate
  boundaries = sorted({int(round(f * total_steps)) for f in schedule.decay_at})
  if not boundaries:
    return learning_rate
  values = [learning_rate * schedule.decay_factor**i
            for i in range(len(boundaries) + 1)]
  return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def build_optimizer(optimizer, schedule, total_steps, precision_policy):
  """SGD with the configured momentum, decay and learning-rate schedule.

  Args:
    optimizer: an `OptimizerConfig`.
    schedule: a `ScheduleConfig`.
    total_steps: the run's length in steps.
    precision_policy: 'mixed_float16' wraps the optimizer in dynamic loss
      scaling; bfloat16 needs none.
  """
  rate = learning_rate_schedule(schedule, float(optimizer.learning_rate),
                                total_steps)
  sgd = keras.optimizers.SGD(
      learning_rate=rate, momentum=optimizer.momentum,
      nesterov=optimizer.nesterov, weight_decay=optimizer.weight_decay or None)
  if optimizer.weight_decay:
    # Keras 3.15's TF backend matches these patterns against the underlying
    # tf.Variable's name ('conv1_bn/gamma:0', and under MirroredStrategy
    # 'conv1_bn/gamma/replica_1:0'), not against the Keras name 'gamma'.
    sgd.exclude_from_weight_decay(var_names=[
        rf'(^|/){name}(/replica_\d+)?(:\d+)?$'
        for name in optimizer.weight_decay_exclude])
  if precision_policy == 'mixed_float16':
    sgd = keras.optimizers.LossScaleOptimizer(sgd)
  return sgd


def current_learning_rate(optimizer):
  return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
