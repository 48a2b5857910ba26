"""Interrupted runs resume exactly: no step repeated, none skipped.

The real binary trains; an uninterrupted run with the same seed is the
reference, one per normalization, shared by the tests of this module (one
xdist worker runs them all: --dist=loadgroup).

- SIGKILL as soon as the first checkpoint (step 10 of 60) exists, then the
  same command again: it resumes there and finishes.
- SIGTERM mid-training saves a checkpoint at the step the loop has reached
  and exits with status 75; the same command resumes there (0 steps lost).

The config exercises every source of state: augmentation (data order and
crops depend on the step), dropout (its RNG state lives in the model),
momentum, a step-decayed learning rate (x0.1 at steps 30 and 45), BatchNorm
moving statistics, and epoch boundaries (350 training images / batch 25 =
14 steps per epoch).

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
import tensorflow as tf

from tests import runs
from tests.data_fixtures import fixture_bindings

pytest_plugins = ('tests.data_fixtures',)
pytestmark = pytest.mark.xdist_group('train_resume')

ROOT = pathlib.Path(__file__).resolve().parents[1]
# metrics.jsonl reaches the disk in chunks (at checkpoints), so the SIGTERM
# test sees step 13 near step 20 and the run stops near step 23 (measured):
# 60 steps leave it ~35 steps of margin.
TOTAL_STEPS = 60
TIMING = ('sec_per_step', 'images_per_sec')


def _command(data_dir, model_dir, norm):
  bindings = [
      *fixture_bindings(data_dir), 'dataset.source = None',
      f"nin.norm = '{norm}'", 'nin.width = 0.05',
      'train/input_pipeline.augment = True', 'nin.dropout = 0.3',
      'trainer.epochs = None', f'trainer.train_steps = {TOTAL_STEPS}',
      'trainer.checkpoint_every_steps = 10', 'trainer.eval_every_steps = 20',
      'hidden_stats.every_steps = 20', 'trainer.log_every_steps = 1']
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
  return {(r['step'], r['split'], r['metric']): r['value']
          for r in runs.metric_rows(model_dir) if r['metric'] not in TIMING}


def _assert_same_weights(model_dir, reference_dir):
  a = keras.saving.load_model(model_dir / 'model.keras').get_weights()
  b = keras.saving.load_model(reference_dir / 'model.keras').get_weights()
  gap = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
  assert gap <= 1e-6, gap


@pytest.fixture(scope='module')
def reference(prepared, tmp_path_factory):
  """reference(norm): the model_dir of the uninterrupted run, made once."""
  data_dir, _ = prepared
  made = {}

  def get(norm):
    if norm not in made:
      made[norm] = tmp_path_factory.mktemp(f'reference_{norm}')
      _run(_command(data_dir, made[norm], norm))
    return made[norm]

  return get


@pytest.mark.parametrize('norm', ['normprop', 'batchnorm'])
def test_sigkill_then_rerun_matches_uninterrupted_run(norm, prepared,
                                                      reference, tmp_path):
  data_dir, _ = prepared
  killed_dir = tmp_path / 'killed'

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
  reference_dir = reference(norm)

  summary = json.loads((killed_dir / 'summary.json').read_text())
  want = json.loads((reference_dir / 'summary.json').read_text())
  assert 0 < summary['resumed_from_step'] < TOTAL_STEPS
  assert summary['steps'] == want['steps'] == TOTAL_STEPS
  assert summary['final_test_error'] == want['final_test_error']
  _assert_same_weights(killed_dir, reference_dir)

  # The records match too: the killed run's records past its checkpoint
  # were dropped on resume and written again, once.
  assert _records(killed_dir) == pytest.approx(_records(reference_dir),
                                               abs=1e-6)


def test_sigterm_saves_the_current_step_and_loses_none(prepared, reference,
                                                       tmp_path):
  data_dir, _ = prepared
  model_dir = tmp_path / 'run'
  command = _command(data_dir, model_dir, 'normprop')
  log = tmp_path / 'run.log'
  with open(log, 'w') as stderr:
    proc = subprocess.Popen(command, cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=stderr)
    runs.wait_for_step(model_dir, 13, proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 75
  seconds = time.monotonic() - sent
  text = log.read_text()
  line = [l for l in text.splitlines() if 'stopped by SIGTERM at step' in l]
  assert len(line) == 1, text[-3000:]
  step = int(line[0].split(' at step ')[1].split(':')[0])
  assert 13 <= step < TOTAL_STEPS, step
  assert tf.train.latest_checkpoint(str(model_dir / 'checkpoints')).endswith(
      f'ckpt-{step}')
  print(f'SIGTERM to exit: {seconds:.2f} s; checkpoint at step {step}, the '
        'step the loop had reached')
  assert seconds < 30

  _run(command)
  summary = json.loads((model_dir / 'summary.json').read_text())
  assert summary['resumed_from_step'] == step
  assert summary['steps'] == TOTAL_STEPS
  _assert_same_weights(model_dir, reference('normprop'))
  keys = runs.metric_keys(model_dir)
  assert len(keys) == len(set(keys))
  assert sorted(k[0] for k in keys if k[1:] == ('train', 'loss')) == list(
      range(1, TOTAL_STEPS + 1))
