"""What every benchmark times: NIN models, synthetic batches, timed calls.

Shared by `benchmarks.step_time` (throughput) and `benchmarks.profile_step`
(profiler breakdown), so both measure exactly the same training step.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from normprop_tf import models


def make_model(norm, width):
  """`models.nin(norm, width)`, seeded, compiled for SGD + momentum, no XLA.

  STACK.md: `jit_compile=True` made every variant ~4x slower on this CPU.
  """
  keras.utils.set_random_seed(0)
  model = models.nin(norm, width=width)
  model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True), jit_compile=False)
  return model


def synthetic_batch(batch):
  """A seeded (images, labels) batch of CIFAR shapes, as NumPy arrays."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, 32, 32, 3)).astype('float32')
  y = rng.integers(0, 10, batch).astype('int32')
  return x, y


class Trainer:
  """Times training steps of one model via `model.fit`.

  The input is one in-memory batch repeated, so the input pipeline costs
  nothing. Calling it with `steps` returns seconds per step.
  """

  def __init__(self, norm, width, batch):
    self.model = make_model(norm, width)
    x, y = synthetic_batch(batch)
    self.ds = tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(2)
    self.batch = batch

  def __call__(self, steps):
    start = time.perf_counter()
    self.model.fit(self.ds, steps_per_epoch=steps, epochs=1, verbose=0,
                   shuffle=False)
    return (time.perf_counter() - start) / steps


class Predictor:
  """Times compiled (`tf.function`) inference calls of one model.

  Calling it with `steps` returns seconds per call; the last output is
  fetched, so the timing includes all the work.
  """

  def __init__(self, model, batch):
    self.x = tf.constant(synthetic_batch(batch)[0])
    self.fn = tf.function(lambda x: model(x, training=False))
    self.batch = batch

  def __call__(self, steps):
    start = time.perf_counter()
    for _ in range(steps):
      out = self.fn(self.x)
    out.numpy()
    return (time.perf_counter() - start) / steps
