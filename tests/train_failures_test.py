"""Each user-fixable failure stops the binary with a clear message.

The binary runs in a subprocess, as a user runs it. Each case must exit with
status 1, print one `normprop_tf.train: error: ...` message that names the
problem and the fix, print no Python traceback, and leave the checkpoints
already written intact.
"""

import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.data_fixtures import fixture_bindings

pytest_plugins = ('tests.data_fixtures',)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _train(model_dir, *bindings, timeout=180):
  start = time.monotonic()
  proc = subprocess.run(
      [sys.executable, '-m', 'normprop_tf.train', '--gin_file=gin/smoke.gin',
       f'--model_dir={model_dir}'] +
      [f'--gin_bindings={b}' for b in bindings],
      cwd=ROOT, capture_output=True, text=True, timeout=timeout,
      env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
  return proc, time.monotonic() - start


def _error(proc):
  """The one error message; asserts exit status 1 and no traceback."""
  assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines()
           if l.startswith('normprop_tf.train: error: ')]
  assert len(lines) == 1, proc.stderr[-3000:]
  start = proc.stderr.index(lines[0])
  return proc.stderr[start:]


def test_unknown_gin_binding_is_named(tmp_path):
  proc, _ = _train(tmp_path / 'run', 'nin.widht = 0.5')
  message = _error(proc)
  assert 'Unknown gin binding' in message
  assert 'widht' in message and 'nin.widht = 0.5' in message


def test_missing_dataset_prints_the_prepare_command(tmp_path):
  data_dir = tmp_path / 'no_data'
  proc, _ = _train(tmp_path / 'run', *fixture_bindings(data_dir),
                   'dataset.source = None')
  message = _error(proc)
  assert (f'python -m data_prep.prepare --dataset=cifar10 '
          f'--data_dir={data_dir}') in message
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_non_finite_loss_names_the_step_and_keeps_the_checkpoint(
    prepared, tmp_path):
  data_dir, _ = prepared
  model_dir = tmp_path / 'run'
  # A plain network at a huge learning rate: step 1 is finite, then the
  # logits overflow.
  proc, _ = _train(model_dir, *fixture_bindings(data_dir),
                   'dataset.source = None', "nin.norm = 'plain'",
                   'optimizer.learning_rate = 1e8',
                   'trainer.checkpoint_every_steps = 1')
  message = _error(proc)
  assert 'NaN or infinite' in message or 'Training loss is' in message
  step = int(message.split(' step ')[1].split()[0])
  assert step >= 2
  assert 'last good checkpoint' in message
  latest = tf.train.latest_checkpoint(str(model_dir / 'checkpoints'))
  assert latest.endswith(f'ckpt-{step - 1}'), (latest, step)
  # The checkpoint is readable and holds finite weights.
  reader = tf.train.load_checkpoint(latest)
  for name, _ in tf.train.list_variables(latest):
    if name.startswith('model_variables/'):
      assert np.all(np.isfinite(reader.get_tensor(name))), name
  assert not (model_dir / 'summary.json').exists()


def test_unwritable_model_dir(tmp_path):
  # A path below a regular file cannot be created, even by root.
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  proc, _ = _train(blocker / 'run')
  message = _error(proc)
  assert 'Cannot write to model_dir' in message
  assert str(blocker / 'run') in message


@pytest.mark.parametrize('address', [None, 'grpc://127.0.0.1:1'])
def test_tpu_requested_without_a_tpu_fails_fast(address, tmp_path):
  bindings = ["strategy.name = 'tpu'"]
  if address:
    bindings.append(f"strategy.tpu_address = '{address}'")
  proc, seconds = _train(tmp_path / 'run', *bindings, timeout=120)
  message = _error(proc)
  assert "strategy.name='tpu' was requested" in message
  assert "strategy.name='default'" in message  # The fix.
  assert seconds < 60  # Fast: no hang on an unreachable address.
