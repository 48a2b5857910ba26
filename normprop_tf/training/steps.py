"""What one training or evaluation step computes, as `tf.function`s.

The loss is softmax cross-entropy on the model's logits, averaged over the
*global* batch (see `make_train_loop`), so the update does not depend on the
number of replicas. Evaluation sums loss and correct predictions over a
whole split, exactly.
"""

import time

import keras
import numpy as np
import tensorflow as tf


def make_train_loop(strategy, model, optimizer, global_batch_size):
  """A tf.function running `num_steps` steps; returns per-step loss, correct."""

  def step_fn(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      per_example = keras.losses.sparse_categorical_crossentropy(
          labels, logits, from_logits=True)
      # Global-batch correctness: each replica divides its summed loss by the
      # *global* batch size, and the Keras optimizer all-reduces (sums) the
      # replicas' gradients (backend/tensorflow/optimizer.py,
      # `_all_reduce_sum_gradients`), so the update is the gradient of the
      # global-batch mean whatever the number of replicas. The learning rate
      # is therefore the one for the global batch.
      loss = tf.nn.compute_average_loss(
          per_example, global_batch_size=global_batch_size)
      scaled_loss = optimizer.scale_loss(loss)  # Identity unless float16.
    grads = tape.gradient(scaled_loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    correct = tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32))
    return loss, correct

  @tf.function
  def train_loop(iterator, num_steps):
    losses = tf.TensorArray(tf.float32, size=num_steps)
    corrects = tf.TensorArray(tf.float32, size=num_steps)
    for i in tf.range(num_steps):
      loss, correct = strategy.run(step_fn, args=next(iterator))
      # SUM over replicas: the losses are already divided by the global
      # batch, and `correct` counts examples.
      losses = losses.write(i, strategy.reduce('SUM', loss, axis=None))
      corrects = corrects.write(i, strategy.reduce('SUM', correct, axis=None))
    return losses.stack(), corrects.stack()

  return train_loop


def make_eval_step(strategy, model):
  """A tf.function returning (loss sum, correct count, example count)."""

  def eval_fn(images, labels):
    logits = model(images, training=False)
    per_example = keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True)
    predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    return (tf.reduce_sum(per_example),
            tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32)),
            tf.cast(tf.size(labels), tf.float32))

  @tf.function(reduce_retracing=True)
  def eval_step(batch):
    sums = strategy.run(eval_fn, args=batch)
    return [strategy.reduce('SUM', s, axis=None) for s in sums]

  return eval_step


def make_finite_check(model):
  """A tf.function: whether every trainable weight is finite."""
  return tf.function(lambda: tf.reduce_all(
      [tf.reduce_all(tf.math.is_finite(v))
       for v in model.trainable_variables]))


def evaluate(eval_step, dataset):
  """Exact loss/accuracy/error over a whole split, and the seconds it took.

  Only the quality metrics are recorded: evaluation throughput would land
  on the training throughput charts.
  """
  start = time.perf_counter()
  totals = np.zeros(3)
  for batch in dataset:
    totals += np.array([float(t) for t in eval_step(batch)])
  seconds = time.perf_counter() - start
  loss_sum, correct, count = totals
  count = max(count, 1.0)
  return {
      'loss': loss_sum / count,
      'accuracy': correct / count,
      'error': 1.0 - correct / count,
  }, seconds


class Window:
  """Training metrics since the last log line.

  Timing leaves out the first call after a (re)start: it traces the step
  function and, on resume, skips the consumed input batches.
  """

  def __init__(self, global_batch_size):
    self.global_batch_size = global_batch_size
    self.loss = self.correct = self.seconds = self.timed_seconds = 0.0
    self.steps = self.timed_steps = 0

  def add(self, losses, corrects, seconds, timed):
    self.loss += float(np.sum(losses))
    self.correct += float(np.sum(corrects))
    self.steps += len(losses)
    self.seconds += seconds
    if timed:
      self.timed_steps += len(losses)
      self.timed_seconds += seconds

  def metrics(self):
    sec_per_step = (self.timed_seconds / self.timed_steps if self.timed_steps
                    else self.seconds / self.steps)
    accuracy = self.correct / (self.steps * self.global_batch_size)
    return {'loss': self.loss / self.steps, 'accuracy': accuracy,
            'error': 1.0 - accuracy, 'sec_per_step': sec_per_step,
            'images_per_sec': self.global_batch_size / sec_per_step}
