"""Resume after SIGKILL: neither repeats nor skips a step.

A run of the real binary is killed with SIGKILL as soon as its first
checkpoint (step 10 of 80) exists, then the same command runs again and
finishes. An uninterrupted run with the same seed is the reference. The
config exercises every source of state: augmentation (data order and crops
depend on the step), dropout (its RNG state lives in the model), momentum,
a step-decayed learning rate, BatchNorm moving statistics, and epoch
boundaries (350 training images / batch 25 = 14 steps per epoch).

Tolerance: the final weights must agree to 1e-6 (absolute). On this CPU
they are bitwise equal: the restored variables are exact copies, the input
pipeline is a deterministic function of (seed, step) and TF's CPU kernels are
deterministic for a fixed thread configuration. One repeated or skipped step
would move the weights by ~1e-3 or more. What can stay nondeterministic:
GPU kernels (cuDNN convolution algorithms, atomics), unless
`experiment.deterministic_ops = True`; and timing metrics (sec_per_step,
images_per_sec), which are excluded from the comparison.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tests.data_fixtures import fixture_bindings

pytest_plugins = ('tests.data_fixtures',)

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOTAL_STEPS = 80
TIMING = ('sec_per_step', 'images_per_sec')


def _command(data_dir, model_dir, norm):
  bindings = [
      *fixture_bindings(data_dir), 'dataset.source = None',
      f"nin.norm = '{norm}'", 'train/input_pipeline.augment = True', 'nin.dropout = 0.3',
      'trainer.epochs = None', f'trainer.train_steps = {TOTAL_STEPS}',
      'trainer.checkpoint_every_steps = 10', 'trainer.eval_every_steps = 20',
      'hidden_stats.every_steps = 20', 'trainer.log_every_steps = 10']
  return ([sys.executable, '-m', 'normprop_tf.train',
           '--gin_file=gin/smoke.gin', f'--model_dir={model_dir}'] +
          [f'--gin_bindings={b}' for b in bindings])


def _run(command, timeout=300):
  proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env=_env())
  assert proc.returncode == 0, proc.stderr[-5000:]
  return proc


def _env():
  return dict(os.environ, CUDA_VISIBLE_DEVICES='')


def _records(model_dir):
  rows = [json.loads(l) for l in
          (model_dir / 'metrics.jsonl').read_text().splitlines()]
  return {(r['step'], r['split'], r['metric']): r['value'] for r in rows
          if r['metric'] not in TIMING}


@pytest.mark.parametrize('norm', ['normprop', 'batchnorm'])
def test_sigkill_then_rerun_matches_uninterrupted_run(norm, prepared,
                                                      tmp_path):
  data_dir, _ = prepared
  killed_dir, reference_dir = tmp_path / 'killed', tmp_path / 'reference'

  # 1. Start, and SIGKILL right after the first checkpoint appears.
  proc = subprocess.Popen(_command(data_dir, killed_dir, norm), cwd=ROOT,
                          stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=_env())
  state = killed_dir / 'checkpoints' / 'checkpoint'
  deadline = time.monotonic() + 240
  try:
    while not state.exists():
      assert proc.poll() is None, 'the run ended before its first checkpoint'
      assert time.monotonic() < deadline, 'no checkpoint within 240 s'
      time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert not (killed_dir / 'summary.json').exists(), 'killed too late'

  # 2. The same command again resumes and finishes.
  resumed = _run(_command(data_dir, killed_dir, norm))
  assert 'Resuming at step' in resumed.stderr
  # 3. The uninterrupted reference.
  _run(_command(data_dir, reference_dir, norm))

  summary = json.loads((killed_dir / 'summary.json').read_text())
  reference = json.loads((reference_dir / 'summary.json').read_text())
  assert 0 < summary['resumed_from_step'] < TOTAL_STEPS
  assert summary['steps'] == reference['steps'] == TOTAL_STEPS
  assert summary['final_test_error'] == reference['final_test_error']

  a = keras.saving.load_model(killed_dir / 'model.keras').get_weights()
  b = keras.saving.load_model(reference_dir / 'model.keras').get_weights()
  gap = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
  assert gap <= 1e-6, gap

  # The records match too: the killed run's records past its checkpoint
  # were dropped on resume and written again, once.
  assert _records(killed_dir) == pytest.approx(_records(reference_dir),
                                               abs=1e-6)
