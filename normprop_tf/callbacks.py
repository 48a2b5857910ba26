"""`HiddenStatistics`: the covariate-shift view for any `model.fit`.

    import normprop_tf as npt
    model.fit(x, y, callbacks=[npt.callbacks.HiddenStatistics(
        x_val[:500], every_steps=100, log_dir='runs/mine')])

Every `every_steps` training steps (and at the start and the end) the
callback runs `diagnostics.probe_model(model)` in inference mode on a fixed
batch and logs what the training package logs for its own runs: the
per-unit moments `stats/...`, the estimate gaps of NormProp and BN units
(`ics/<unit>/gap_mean`, `gap_std`, and their mean over layers), and the
kernel norms and learned scales (`weights/...`); docs/tensorboard.md.

Where they go:
- `history`: a list of (step, {scalar tag: value}), always;
- `records_file`: one JSON line per scalar (`{"step", "metric", "value"}`),
  under any backend;
- `log_dir`: TensorBoard events in `<log_dir>/train` (where
  `keras.callbacks.TensorBoard(log_dir)` puts its training scalars, so the
  two overlay) and the custom-scalars layout at `<log_dir>`. Needs
  TensorFlow for its event writer; with another backend it needs only to be
  importable.
"""

import json
import os

import keras
import numpy as np

from normprop_tf import diagnostics
from normprop_tf.utils import checks


class HiddenStatistics(keras.callbacks.Callback):
  """Logs hidden-layer statistics and estimate gaps during `model.fit`.

  Args:
    probe_data: the fixed batch, already preprocessed as the model's input
      (an array, or a tuple whose first element is one).
    every_steps: log every this many training steps (a positive integer).
    log_dir: TensorBoard directory, or None.
    records_file: a JSON-lines file to append to, or None.
    histograms: also write histograms to TensorBoard.
    histogram_values: at most this many sampled values per histogram.
  """

  def __init__(self, probe_data, every_steps=100, log_dir=None,
               records_file=None, histograms=True, histogram_values=4096):
    super().__init__()
    if isinstance(probe_data, (tuple, list)):
      probe_data = probe_data[0]
    probe_data = np.asarray(probe_data, np.float32)
    if probe_data.ndim < 2 or not len(probe_data):
      checks.fail('probe_data', probe_data.shape,
                  'must be a non-empty batch of model inputs')
    checks.integer('every_steps', every_steps, minimum=1)
    checks.integer('histogram_values', histogram_values, minimum=1)
    self.probe_data = probe_data
    self.every_steps = every_steps
    self.log_dir = log_dir
    self.records_file = records_file
    self.write_histograms = histograms
    self.histogram_values = histogram_values
    self.history = []
    self._probe = None
    self._writers = None
    self._step = self._epoch_start = 0
    self._last_logged = None

  def on_train_begin(self, logs=None):
    self._probe = diagnostics.probe_model(self.model)
    if not self._probe.unit_kinds:
      raise ValueError(
          f'HiddenStatistics found no NormProp, weight-norm or '
          f'BatchNormalization unit in model {self.model.name!r}; it has '
          f'layers {[l.name for l in self.model.layers]}.')
    if self.log_dir:
      self._writers = _tensorboard_writers(self.log_dir,
                                           list(self._probe.unit_kinds))
    if self._step == 0:
      self.log_now()

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start = self._step

  def on_train_batch_end(self, batch, logs=None):
    # `batch` is the epoch's index of the last batch this call ran (a call
    # runs `steps_per_execution` batches).
    before, self._step = self._step, self._epoch_start + batch + 1
    if self._step // self.every_steps > before // self.every_steps:
      self.log_now()

  def on_train_end(self, logs=None):
    if self._last_logged != self._step:
      self.log_now()
    if self._writers is not None:
      self._writers.close()

  def log_now(self):
    """Computes and logs the statistics at the current step; returns them."""
    # Keras' JAX trainer keeps the weights outside the variables during fit;
    # `Callback.model` writes them back (jax_state_sync) before returning.
    model = self.model
    stats = diagnostics.statistics(
        self._probe(self.probe_data, training=False), self.histogram_values)
    scalars, histograms = diagnostics.summarize(stats, self._probe.unit_kinds)
    histograms.update(diagnostics.weight_statistics(model))
    self.history.append((self._step, scalars))
    self._last_logged = self._step
    if self.records_file:
      directory = os.path.dirname(self.records_file)
      if directory:
        os.makedirs(directory, exist_ok=True)
      with open(self.records_file, 'a', encoding='utf-8') as f:
        f.writelines(json.dumps({'step': self._step, 'metric': k,
                                 'value': v}) + '\n'
                     for k, v in scalars.items())
    if self._writers is not None:
      self._writers.write(self._step, scalars,
                          histograms if self.write_histograms else {})
    return scalars


class _Writers:
  """The TensorBoard side (TensorFlow's summary writer)."""

  def __init__(self, log_dir, units):
    from normprop_tf.training import summaries  # pylint: disable=g-import-not-at-top
    self._summaries = summaries
    self.events = summaries.EventWriters(log_dir)
    self.events.custom_scalars(units)

  def write(self, step, scalars, histograms):
    self.events.scalars('train', step, scalars)
    self.events.histograms('train', step, histograms)
    self.events.flush()

  def close(self):
    self.events.close()


def _tensorboard_writers(log_dir, units):
  try:
    return _Writers(log_dir, units)
  except ImportError as e:
    raise ImportError(
        f'HiddenStatistics(log_dir={log_dir!r}) writes TensorBoard events '
        f'with TensorFlow, which cannot be imported ({e}). Install it '
        "(pip install 'normprop_tf[tf]'), or pass records_file= instead."
    ) from None
