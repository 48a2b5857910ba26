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
"""

import json
import os
import time

import tensorflow as tf

from normprop_tf.training import errors
from normprop_tf.utils import fileio
from normprop_tf.utils import hardware

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
    tf.io.gfile.makedirs(model_dir)
    with tf.io.gfile.GFile(probe, 'w') as f:
      f.write('ok')
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as e:
    message = getattr(e, 'message', None) or str(e)
    raise errors.ModelDirError(
        f'Cannot write to model_dir {model_dir!r}: {message.strip()}. Choose '
        'a writable directory with --model_dir, or fix its permissions.'
    ) from None


def write_json(path, obj):
  """Writes `obj` as indented JSON, atomically."""
  fileio.write_json(path, obj)


def read_jsonl(path):
  """All records of a metrics.jsonl file (empty if absent)."""
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path, 'r') as f:
    return [json.loads(line) for line in f if line.strip()]


def hardware_info(strategy=None):
  """Host, CPU, accelerators and library versions, for summary.json."""
  devices = {}
  for device in tf.config.list_logical_devices():
    devices[device.device_type] = devices.get(device.device_type, 0) + 1
  info = hardware.machine_info(devices, tensorflow=tf.__version__)
  if strategy is not None:
    info['replicas'] = strategy.num_replicas_in_sync
  return info


class _NullWriter:
  """Stands in for a summary writer on non-chief workers."""

  def as_default(self, step=None):  # pylint: disable=unused-argument
    return tf.summary.create_noop_writer().as_default()

  def flush(self):
    pass

  def close(self):
    pass


class Recorder:
  """Writes scalars to TensorBoard and metrics.jsonl, and the summary.

  Args:
    model_dir: the run directory.
    seed: the run's seed, copied into every record.
    config: the config name (e.g. 'nin_cifar10'), copied into every record.
    enabled: False on non-chief workers: nothing is written.
  """

  def __init__(self, model_dir, seed, config, enabled=True):
    self.model_dir = model_dir
    self.seed = seed
    self.config = config
    self.enabled = enabled
    self._writers = {}
    self._pending = []
    self.metrics_path = os.path.join(model_dir, METRICS_FILE)

  def writer(self, split):
    """The summary writer of `split`; '' is the run's root directory."""
    if split not in self._writers:
      self._writers[split] = (
          tf.summary.create_file_writer(os.path.join(self.model_dir, split))
          if self.enabled else _NullWriter())
    return self._writers[split]

  def scalars(self, split, step, epoch, values, tensorboard=True):
    """Records {metric: value} of `split` at `step` (and `epoch`)."""
    if not self.enabled:
      return
    if tensorboard:
      with self.writer(split).as_default(step=step):
        for name, value in values.items():
          tf.summary.scalar(name, value)
    for name, value in values.items():
      self._pending.append({
          'step': int(step), 'epoch': round(float(epoch), 4), 'split': split,
          'metric': name, 'value': float(value), 'seed': self.seed,
          'config': self.config})

  def flush(self):
    """Appends pending records to metrics.jsonl and flushes the events."""
    if not self.enabled:
      return
    if self._pending:
      lines = ''.join(json.dumps(r) + '\n' for r in self._pending)
      if fileio.is_remote(self.metrics_path):  # GCS cannot append.
        old = (fileio.read_text(self.metrics_path)
               if fileio.exists(self.metrics_path) else '')
        fileio.atomic_write(self.metrics_path, old + lines)
      else:
        with open(self.metrics_path, 'a', encoding='utf-8') as f:
          f.write(lines)
      self._pending = []
    for writer in self._writers.values():
      writer.flush()

  def truncate_after(self, step):
    """Drops records with step > `step` (left by a run killed after it)."""
    if not self.enabled:
      return
    self._pending = [r for r in self._pending if r['step'] <= step]
    records = read_jsonl(self.metrics_path)
    kept = [r for r in records if r['step'] <= step]
    if len(kept) != len(records):
      fileio.atomic_write(self.metrics_path,
                          ''.join(json.dumps(r) + '\n' for r in kept))

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
    for writer in self._writers.values():
      writer.close()
