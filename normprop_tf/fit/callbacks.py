"""What the Keras-only runner records while `model.fit` trains.

`RunRecorder` is a Keras callback that writes the same records as the
TensorFlow path's trainer (`records.Recorder` rows in metrics.jsonl):

- every `log_every_steps` steps, split 'train': loss, accuracy, error of
  the interval (from Keras' running epoch means), learning_rate,
  sec_per_step, images_per_sec; and a progress line with an ETA;
- every `eval_every_steps` steps (and at the end), the validation split
  (and the test split if `eval_test`), evaluated exactly over the whole
  split: loss, accuracy, error;
- it stops training at `total_steps`, which need not be a whole epoch.

`ProbeRecorder` records the hidden-layer statistics under split 'probe'
with the same tags and cadence as the TensorFlow path (at step 0, every
`hidden_stats.every_steps` steps and at the end), computed by
`normprop_tf.diagnostics` in keras.ops.
"""

import time

import keras
import numpy as np

from normprop_tf import callbacks as public_callbacks
from normprop_tf.fit import inputs
from normprop_tf.training import optimization


def evaluate(model, images, labels, batch_size, minibatch=False):
  """Exact mean loss, accuracy and error over a split, and its seconds."""
  start = time.perf_counter()
  loss_sum, correct = 0.0, 0
  for i in range(0, len(labels), batch_size):
    x = images[i:i + batch_size]
    if minibatch:
      x = inputs.minibatch_standardize(x)
    logits = np.asarray(model(x, training=False), np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    y = labels[i:i + batch_size]
    loss_sum -= float(log_probs[np.arange(len(y)), y].sum())
    correct += int((logits.argmax(axis=1) == y).sum())
  seconds = time.perf_counter() - start
  count = max(len(labels), 1)
  return {'loss': loss_sum / count, 'accuracy': correct / count,
          'error': 1.0 - correct / count}, seconds


def _crossed(step, done, every):
  """Whether a multiple of `every` lies in (step - done, step]."""
  return bool(every) and step // every > (step - done) // every


class RunRecorder(keras.callbacks.Callback):
  """Records, evaluates and stops `fit` like the TensorFlow trainer.

  Args:
    recorder: a `training.records.Recorder` (metrics.jsonl).
    progress: a `training.progress.Progress`.
    schedule: what to evaluate and when: a dict with keys `total_steps`,
      `steps_per_epoch`, `log_every`, `eval_every`, `eval_test`,
      `global_batch_size`, `eval_batch_size`, `minibatch`.
    eval_splits: {split: (images, labels)} for 'validation' and 'test'.
  """

  def __init__(self, recorder, progress, schedule, eval_splits):
    super().__init__()
    self.recorder, self.progress = recorder, progress
    self.s = schedule
    self.eval_splits = eval_splits
    self.step = 0
    self.last = {}
    self._last_log = 0
    self._sums = {'loss': 0.0, 'accuracy': 0.0}
    self._window_start = None

  def on_train_batch_begin(self, batch, logs=None):
    if self._window_start is None:
      self._window_start = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    # `batch` is the index of the last batch of this call (calls run
    # `steps_per_execution` steps); the whole run is one Keras epoch.
    done = batch + 1 - self.step
    self.step = batch + 1
    s = self.s
    log = self.step >= s['total_steps'] or _crossed(self.step, done,
                                                    s['log_every'])
    evaluate = self.step >= s['total_steps'] or _crossed(self.step, done,
                                                         s['eval_every'])
    if log:  # Logs are read only here: reading them syncs the device.
      self._log(logs)
    if evaluate:
      self._evaluate_all()
    if self.step >= s['total_steps']:
      self.model.stop_training = True

  def _epoch(self):
    return self.step / self.s['steps_per_epoch']

  def _learning_rate(self):
    return optimization.current_learning_rate(self.model.optimizer)

  def _log(self, logs):
    # Keras logs running means since the start of the (single) epoch: the
    # window's mean is the difference of two running sums.
    steps = self.step - self._last_log
    window = {}
    for key in ('loss', 'accuracy'):
      total = float(logs[key]) * self.step
      window[key] = (total - self._sums[key]) / steps
      self._sums[key] = total
    seconds = time.perf_counter() - self._window_start
    batch = self.s['global_batch_size']
    metrics = {'loss': window['loss'], 'accuracy': window['accuracy'],
               'error': 1.0 - window['accuracy'],
               'learning_rate': self._learning_rate(),
               'sec_per_step': seconds / steps,
               'images_per_sec': batch * steps / seconds}
    self.recorder.scalars('train', self.step, self._epoch(), metrics)
    self.progress.update_speed(metrics['sec_per_step'])
    self.progress.log(self.step, metrics)
    self._last_log = self.step
    self._window_start = None

  def _evaluate_all(self):
    splits = ['validation'] + (['test'] if self.s['eval_test'] else [])
    seconds = 0.0
    for split in splits:
      if split in self.eval_splits:
        seconds += self.evaluate(split)
    self.progress.eval_seconds = seconds
    self.progress.evals_left -= 1
    self.recorder.flush()

  def evaluate(self, split):
    """Evaluates and records `split` at the current step; returns seconds."""
    metrics, seconds = evaluate(self.model, *self.eval_splits[split],
                                self.s['eval_batch_size'], self.s['minibatch'])
    self.recorder.scalars(split, self.step, self._epoch(), metrics)
    self.last[split] = metrics
    return seconds


class ProbeRecorder(public_callbacks.HiddenStatistics):
  """`HiddenStatistics` whose scalars go to the run's records (split 'probe').

  Args:
    recorder: the run's `records.Recorder`.
    probe_images: the preprocessed probe batch.
    every_steps: the cadence (`hidden_stats.every_steps`, positive).
    steps_per_epoch: to record each row's epoch.
  """

  def __init__(self, recorder, probe_images, every_steps, steps_per_epoch):
    super().__init__(probe_images, every_steps=every_steps, histograms=False)
    self.recorder = recorder
    self.steps_per_epoch = steps_per_epoch

  def log_now(self):
    scalars = super().log_now()
    self.recorder.scalars('probe', self._step,
                          self._step / self.steps_per_epoch, scalars)
    return scalars
