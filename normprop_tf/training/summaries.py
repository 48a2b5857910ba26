"""TensorBoard event writers of a run, one per split, and the machine info.

`EventWriters` is what a `records.Recorder` writes its scalars through: one
`tf.summary` file writer per run directory (`train/`, `validation/`,
`test/`, `probe/`, and '' for the run's root), created on first use. On
non-chief workers every writer is a no-op.
"""

import os

import tensorflow as tf

from normprop_tf.utils import hardware


class _NullWriter:
  """Stands in for a summary writer on non-chief workers."""

  def as_default(self, step=None):  # pylint: disable=unused-argument
    return tf.summary.create_noop_writer().as_default()

  def flush(self):
    pass

  def close(self):
    pass


class EventWriters:
  """The summary writers of one run directory.

  Args:
    model_dir: the run directory.
    enabled: False on non-chief workers: nothing is written.
  """

  def __init__(self, model_dir, enabled=True):
    self.model_dir = model_dir
    self.enabled = enabled
    self._writers = {}

  def writer(self, split):
    """The summary writer of `split`; '' is the run's root directory."""
    if split not in self._writers:
      self._writers[split] = (
          tf.summary.create_file_writer(os.path.join(self.model_dir, split))
          if self.enabled else _NullWriter())
    return self._writers[split]

  def scalars(self, split, step, values):
    with self.writer(split).as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, value)

  def flush(self):
    for writer in self._writers.values():
      writer.flush()

  def close(self):
    for writer in self._writers.values():
      writer.close()


def hardware_info(strategy=None):
  """Host, CPU, accelerators and library versions, for summary.json."""
  devices = {}
  for device in tf.config.list_logical_devices():
    devices[device.device_type] = devices.get(device.device_type, 0) + 1
  info = hardware.machine_info(devices, tensorflow=tf.__version__)
  if strategy is not None:
    info['replicas'] = strategy.num_replicas_in_sync
  return info
