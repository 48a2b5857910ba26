"""What every benchmark times: NIN models, synthetic batches, timed calls.

Shared by `benchmarks.step_time` (throughput), `benchmarks.profile_step`
(profiler breakdown) and `benchmarks.ab`, so all measure exactly the same
training step, the same way, and write reports/perf.md alike.
"""

import os
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from normprop_tf import models


def make_model(norm, width, **nin_kwargs):
  """`models.nin(norm, width=width, ...)` with seeded initialization."""
  keras.utils.set_random_seed(0)
  return models.nin(norm, width=width, **nin_kwargs)


def _compile_args():
  return dict(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(
                  from_logits=True))


def synthetic_batch(batch):
  """A seeded (images, labels) batch of CIFAR shapes, as NumPy arrays."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, 32, 32, 3)).astype('float32')
  y = rng.integers(0, 10, batch).astype('int32')
  return x, y


class Trainer:
  """Times training steps of one model: SGD + momentum, no XLA.

  One step is a `tf.function` of forward, loss, gradient and optimizer
  update, called once per step from Python, as `normprop_tf.train_lib`'s
  loop does (and `model.fit` with `steps_per_execution=1`). Not `model.fit`
  itself: in Keras 3.15 about half of the `fit` calls spend ~1.8 s after the
  last step (measured at width 1.0, batch 128, with and without prefetch and
  garbage collection), which made repeated timings bimodal. No XLA: `jit_compile=True`
  was ~4x slower on this CPU (docs/stack.md). The input is one
  in-memory batch, so the input pipeline costs nothing. Calling it with
  `steps` returns seconds per step, after fetching the last loss.
  """

  def __init__(self, norm, width, batch, **nin_kwargs):
    self.model = make_model(norm, width, **nin_kwargs)
    self.batch = batch
    args = _compile_args()
    optimizer, loss_fn = args['optimizer'], args['loss']
    optimizer.build(self.model.trainable_variables)
    x, y = (tf.constant(a) for a in synthetic_batch(batch))
    model = self.model

    @tf.function(jit_compile=False)
    def step():
      with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
      grads = tape.gradient(loss, model.trainable_variables)
      optimizer.apply(grads, model.trainable_variables)
      return loss

    self._step = step

  def __call__(self, steps):
    start = time.perf_counter()
    for _ in range(steps):
      loss = self._step()
    loss.numpy()
    return (time.perf_counter() - start) / steps


class _StepClock(keras.callbacks.Callback):
  """Times `fit`'s steps from the end of step 0 to the end of the last."""

  def __init__(self, last):
    super().__init__()
    self.last = last
    self.start = self.end = None

  def on_train_batch_end(self, batch, logs=None):
    if batch in (0, self.last):
      float(logs['loss'])  # Waits for the step's work to finish.
      now = time.perf_counter()
      if batch == 0:
        self.start = now
      else:
        self.end = now


class FitTrainer:
  """Times training steps inside `model.fit`, as most users train.

  The model is compiled with the same SGD + momentum and loss as `Trainer`
  (Keras' defaults otherwise: no XLA on CPU, one step per execution) and fit
  on one in-memory batch repeated. Only the steps inside `fit` are timed, by
  a callback from the end of step 0 (tracing, iterator start) to the end of
  the last step, so neither the set-up nor the teardown stall that Keras
  3.15's `fit` shows in about half of its calls counts.
  """

  def __init__(self, norm, width, batch, **nin_kwargs):
    self.model = make_model(norm, width, **nin_kwargs)
    self.model.compile(**_compile_args())
    self.data = tf.data.Dataset.from_tensors(synthetic_batch(batch))
    self.batch = batch

  def __call__(self, steps):
    steps = max(2, steps)
    clock = _StepClock(steps - 1)
    self.model.fit(self.data.repeat(steps), epochs=1, verbose=0,
                   callbacks=[clock])
    return (clock.end - clock.start) / (steps - 1)


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


def interleaved_medians(runners, reps, steps=0, raw=None):
  """Median seconds per step of each runner, {name: seconds}.

  Every runner is warmed up (tracing, first-call allocations), then the
  runners take turns, the order rotating every repetition, so slow drifts
  of the machine hit all of them alike.

  Args:
    runners: {name: callable(steps) -> seconds per step}.
    reps: timings per runner.
    steps: steps per timing; 0 picks about 2 s of work per timing.
    raw: if a dict, it receives {name: (steps per timing, [seconds per step
      of each repetition])}.
  """
  per_timing = {}
  for name, run in runners.items():
    run(2)
    per_timing[name] = steps or max(3, min(200, int(2.0 / run(3))))
  times = {name: [] for name in runners}
  names = list(runners)
  for rep in range(reps):
    for name in names[rep % len(names):] + names[:rep % len(names)]:
      times[name].append(runners[name](per_timing[name]))
  if raw is not None:
    raw.update({name: (per_timing[name], times[name]) for name in names})
  return {name: statistics.median(t) for name, t in times.items()}


def update_markdown_section(path, begin, end, body):
  """Replaces the text from marker `begin` to marker `end` in `path`.

  `body` must start with `begin` and end with `end`. Appends it when the
  markers are absent, and creates the file ('# Performance') if needed, so
  hand-written text around the markers survives every rerun.
  """
  text = open(path).read() if os.path.exists(path) else '# Performance\n'
  if begin in text:
    text = text[:text.index(begin)] + body + text[text.index(end) + len(end):]
  else:
    text = text.rstrip('\n') + '\n\n' + body + '\n'
  with open(path, 'w') as f:
    f.write(text)
