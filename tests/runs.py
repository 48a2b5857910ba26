"""Helpers of the tests that start, signal and inspect real training runs."""

import json
import os
import pathlib
import time

from normprop_tf.training import records


def metric_rows(model_dir):
  """The rows of a finished run's metrics.jsonl, in order.

  Strict: a line that is not JSON (a half-written one left behind) fails.
  """
  return [json.loads(l) for l in
          (pathlib.Path(model_dir) / records.METRICS_FILE).read_text()
          .splitlines()]


def metric_keys(model_dir):
  """[(step, split, metric)] of a finished run's metrics.jsonl, in order."""
  return [(r['step'], r['split'], r['metric']) for r in metric_rows(model_dir)]


def wait_for_step(model_dir, step, proc, timeout=240):
  """Returns once `proc` has recorded a train metric at `step` or later."""
  path = os.path.join(model_dir, records.METRICS_FILE)
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and proc.poll() is None:
    # The run may be appending: read_jsonl drops a half-written last line.
    if any(r['split'] == 'train' and r['step'] >= step
           for r in records.read_jsonl(path)):
      return
    time.sleep(0.2)
  raise AssertionError(f'step {step} never came ({proc.poll()})')
