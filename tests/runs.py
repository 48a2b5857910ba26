"""Helpers of the tests that start, signal and inspect real training runs."""

import json
import pathlib
import time


def metric_keys(model_dir):
  """[(step, split, metric)] of metrics.jsonl, in the order written."""
  rows = [json.loads(l) for l in
          (pathlib.Path(model_dir) / 'metrics.jsonl').read_text().splitlines()]
  return [(r['step'], r['split'], r['metric']) for r in rows]


def wait_for_step(model_dir, step, proc, timeout=240):
  """Returns once `proc` has recorded a train metric at `step` or later."""
  path = pathlib.Path(model_dir) / 'metrics.jsonl'
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and proc.poll() is None:
    if path.exists() and any(
        k[1] == 'train' and k[0] >= step for k in metric_keys(model_dir)):
      return
    time.sleep(0.2)
  raise AssertionError(f'step {step} never came ({proc.poll()})')
