"""What a run records beside its TensorBoard events, in plain files.

- `metrics.jsonl`: one tidy JSON record per line,
  `{"step", "epoch", "split", "metric", "value", "seed", "config"}`, for every
  scalar that also goes to TensorBoard (train, validation, test, and the
  hidden-layer statistics under split 'probe'). Reports read these records,
  never TensorBoard screenshots.
- `summary.json`: final validation and test error (and the best validation
  error), `wall_time_seconds` of this invocation, `train_seconds` spent in
  the training loop summed over every resume, steps, hardware, versions.
- `config.json`: the settings that define the run, by component (model,
  optimizer, schedule, data, training length and batch), with plain keys
  that do not depend on gin's names. Written when the run starts.
- `flags.json`: the command line (written by the entry point).

`Recorder.scalars` writes one set of scalars to both TensorBoard (one run
directory per split: `train/`, `validation/`, `test/`) and metrics.jsonl, so
the two can never disagree. After a resume, records past the restored
checkpoint are dropped (`truncate_after`), so that a killed and resumed run
leaves the same records as an uninterrupted one.

Only the chief writes; other workers get a `Recorder(enabled=False)`.
This module imports no TensorFlow: the TensorBoard side is an `events`
object (`normprop_tf.training.summaries.EventWriters`) given to the
`Recorder`, and the Keras-only runner (`normprop_tf.fit`) records without
one.
"""

import json
import os
import time

from absl import logging

from normprop_tf.training import errors
from normprop_tf.utils import fileio

METRICS_FILE = 'metrics.jsonl'
SUMMARY_FILE = 'summary.json'
CONFIG_FILE = 'config.json'
FLAGS_FILE = 'flags.json'


def prepare_model_dir(model_dir):
  """Creates `model_dir` and checks that it is writable.

  Raises:
    ModelDirError: naming the directory and the underlying error.
  """
  if not model_dir:
    raise errors.ModelDirError(
        '--model_dir is required: the directory for checkpoints, events and '
        'records (e.g. --model_dir=runs/nin_cifar10).')
  probe = os.path.join(model_dir, f'.write_test_{os.getpid()}')
  try:
    fileio.makedirs(model_dir)
    fileio.atomic_write(probe, 'ok')
    fileio.remove(probe)
  except fileio.errors() as e:
    message = getattr(e, 'message', None) or str(e)
    raise errors.ModelDirError(
        f'Cannot write to model_dir {model_dir!r}: {message.strip()}. Choose '
        'a writable directory with --model_dir, or fix its permissions.'
    ) from None


def write_json(path, obj):
  """Writes `obj` as indented JSON, atomically."""
  fileio.write_json(path, obj)


def read_jsonl(path):
  """All records of a metrics.jsonl file (empty if absent).

  A half-written last line (a run killed while appending) is dropped with a
  warning; a damaged line before it is an error.

  Raises:
    TrainingError: a line other than the last is not JSON.
  """
  if not fileio.exists(path):
    return []
  with fileio.open_file(path, 'r') as f:
    lines = [line for line in f if line.strip()]
  rows = []
  for number, line in enumerate(lines, start=1):
    try:
      rows.append(json.loads(line))
    except ValueError:
      if number < len(lines):
        raise errors.TrainingError(
            f'{path} is damaged at line {number} of {len(lines)} (not JSON). '
            'Restore it, or remove it to record from scratch.') from None
      logging.warning('Dropping the half-written last line of %s: %r', path,
                      line[:80])
  return rows


def _key(row):
  return (row['step'], row['split'], row['metric'])


class Recorder:
  """Writes scalars to metrics.jsonl (and TensorBoard), and the summary.

  Args:
    model_dir: the run directory.
    seed: the run's seed, copied into every record.
    config: the config name (e.g. 'nin_cifar10'), copied into every record.
    enabled: False on non-chief workers: nothing is written.
    events: where scalars also go for TensorBoard, an object with
      `scalars(split, step, values)`, `writer(split)`, `flush()` and
      `close()` (`summaries.EventWriters`); None: records only.
  """

  def __init__(self, model_dir, seed, config, enabled=True, events=None):
    self.model_dir = model_dir
    self.seed = seed
    self.config = config
    self.enabled = enabled
    self.events = events
    self._pending = []
    self._keys = None  # (step, split, metric) of the rows in the file.
    self.metrics_path = os.path.join(model_dir, METRICS_FILE)

  def writer(self, split):
    """The TensorBoard writer of `split`; '' is the run's root directory."""
    return self.events.writer(split)

  def scalars(self, split, step, epoch, values, tensorboard=True):
    """Records {metric: value} of `split` at `step` (and `epoch`)."""
    if not self.enabled:
      return
    if tensorboard and self.events is not None:
      self.events.scalars(split, step, values)
    for name, value in values.items():
      self._pending.append({
          'step': int(step), 'epoch': round(float(epoch), 4), 'split': split,
          'metric': name, 'value': float(value), 'seed': self.seed,
          'config': self.config})

  def flush(self):
    """Writes pending records to metrics.jsonl and flushes the events.

    Rows are keyed by (step, split, metric): a pending row whose key the file
    already holds (a step recorded again after a resume) replaces the old
    row, by an atomic rewrite; otherwise the rows are appended.
    """
    if not self.enabled:
      return
    if self._pending:
      if self._keys is None:
        self._keys = {_key(r) for r in read_jsonl(self.metrics_path)}
      pending = {_key(r): r for r in self._pending}
      if self._keys & pending.keys() or fileio.is_remote(self.metrics_path):
        # GCS cannot append either.
        kept = [r for r in read_jsonl(self.metrics_path)
                if _key(r) not in pending]
        self._rewrite(kept + list(pending.values()))
      else:
        with open(self.metrics_path, 'a', encoding='utf-8') as f:
          f.write(''.join(json.dumps(r) + '\n' for r in pending.values()))
      self._keys |= pending.keys()
      self._pending = []
    if self.events is not None:
      self.events.flush()

  def _rewrite(self, rows):
    fileio.atomic_write(self.metrics_path,
                        ''.join(json.dumps(r) + '\n' for r in rows))

  def truncate_after(self, step):
    """Drops records with step > `step` (left by a run killed after it).

    Also drops a half-written last line and duplicate keys (the last row of
    a key wins), so the file is keyed and unique again.
    """
    if not self.enabled:
      return
    self._pending = [r for r in self._pending if r['step'] <= step]
    text = (fileio.read_text(self.metrics_path)
            if fileio.exists(self.metrics_path) else '')
    rows = read_jsonl(self.metrics_path)
    kept = {_key(r): r for r in rows if r['step'] <= step}
    result = ''.join(json.dumps(r) + '\n' for r in kept.values())
    if result != text:
      self._rewrite(list(kept.values()))
    self._keys = set(kept)

  def best(self, split):
    """The lowest error recorded for `split` so far, or None."""
    if not split or not self.enabled:
      return None
    self.flush()
    seen = [r['value'] for r in read_jsonl(self.metrics_path)
            if r['split'] == split and r['metric'] == 'error']
    return min(seen) if seen else None

  def write_config(self, settings):
    if self.enabled:
      write_json(os.path.join(self.model_dir, CONFIG_FILE), settings)

  def write_summary(self, summary):
    if self.enabled:
      summary = dict(summary, written_utc=time.strftime(
          '%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
      write_json(os.path.join(self.model_dir, SUMMARY_FILE), summary)

  def close(self):
    self.flush()
    if self.events is not None:
      self.events.close()
