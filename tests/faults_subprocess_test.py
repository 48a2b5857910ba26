"""Faults that need real processes: concurrency, signals, kill points.

Each runs the real binaries on the prepared CIFAR-10 subset
(tests/data_fixtures.py) with a tiny NIN (width 0.05):

- two preparations of one missing data_dir at once (the command line, and
  two trainings that auto-prepare it) both succeed, and the data_dir is
  valid (every shard's sha256 checked);
- a second training into a busy model_dir stops at once with one line;
- SIGTERM mid-training saves a checkpoint at the current step and exits
  with status 75; the rerun resumes there and ends with exactly the weights
  of an uninterrupted run (0 steps lost); SIGINT exits with 130, saved too;
- states a kill leaves (records but no checkpoint; a final evaluation but
  no summary) resume with metrics.jsonl keyed and unique;
- a resume onto a re-prepared data_dir, and a shard corrupted past a 'size'
  check, end in one line each.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from normprop_tf import data
from normprop_tf.utils import locking
from tests.data_fixtures import ROOT

pytest_plugins = ('tests.data_fixtures',)

TOTAL = 100


def _env():
  return dict(os.environ, CUDA_VISIBLE_DEVICES='', TF_CPP_MIN_LOG_LEVEL='2')


def _train_args(model_dir, data_dir, *bindings, steps=TOTAL, source=None):
  settings = [
      f"dataset.data_dir = '{data_dir}'",
      f"dataset.source = {repr(str(source)) if source else None}",
      'dataset.validation_size = 50', 'dataset.subset_per_class = None',
      'nin.width = 0.05', 'trainer.epochs = None',
      f'trainer.train_steps = {steps}', 'trainer.checkpoint_every_steps = 10',
      'trainer.eval_every_steps = 20', 'hidden_stats.every_steps = 20',
      'trainer.log_every_steps = 1', 'train/input_pipeline.augment = True',
      *bindings]
  return ([sys.executable, '-m', 'normprop_tf.train',
           '--gin_file=gin/smoke.gin', f'--model_dir={model_dir}'] +
          [f'--gin_bindings={b}' for b in settings])


def _start(args, log):
  return subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=open(log, 'w'))


def _run(args, timeout=300):
  return subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=timeout)


def _keys(model_dir):
  rows = [json.loads(l) for l in
          (pathlib.Path(model_dir) / 'metrics.jsonl').read_text().splitlines()]
  return [(r['step'], r['split'], r['metric']) for r in rows]


def _weights(model_dir):
  path = tf.train.latest_checkpoint(str(pathlib.Path(model_dir) /
                                        'checkpoints'))
  reader = tf.train.load_checkpoint(path)
  return {n: reader.get_tensor(n) for n, _ in tf.train.list_variables(path)
          if n.startswith('model_variables/')}


def _wait_for_step(model_dir, step, proc, timeout=240):
  path = pathlib.Path(model_dir) / 'metrics.jsonl'
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and proc.poll() is None:
    if path.exists() and any(
        k[1] == 'train' and k[0] >= step for k in _keys(model_dir)):
      return
    time.sleep(0.2)
  raise AssertionError(f'step {step} never came ({proc.poll()})')


def _one_error(stderr):
  lines = [l for l in stderr.splitlines()
           if l.startswith('normprop_tf.train: error: ')]
  assert len(lines) == 1 and 'Traceback' not in stderr, stderr[-3000:]
  return lines[0]


def test_concurrent_preparations_of_one_data_dir(subset_tar, tmp_path):
  args = [sys.executable, '-m', 'data_prep.prepare', '--dataset=cifar10',
          f'--source={subset_tar}', f'--data_dir={tmp_path / "data"}',
          '--validation_size=50', '--nozca']
  # While another process holds the directory, a preparation waits for it
  # (the holder here is this test, so the overlap does not depend on timing).
  holder = locking.DirectoryLock(str(tmp_path / 'data'), 'a test holding it',
                                 wait=True)
  with holder:
    waiting = _start(args, tmp_path / 'waiting.log')
    deadline = time.monotonic() + 120
    while 'waiting for it to finish' not in (
        tmp_path / 'waiting.log').read_text():
      assert waiting.poll() is None, (tmp_path / 'waiting.log').read_text()
      assert time.monotonic() < deadline, 'never waited for the lock'
      time.sleep(0.2)
    assert not (tmp_path / 'data' / 'stats.json').exists()
  assert waiting.wait(timeout=300) == 0, (
      tmp_path / 'waiting.log').read_text()[-2000:]
  shutil.rmtree(tmp_path / 'data')
  # Two real preparations at once: both succeed, the directory is whole.
  procs = [_start(args, tmp_path / f'prep{i}.log') for i in range(2)]
  assert [p.wait(timeout=300) for p in procs] == [0, 0], [
      (tmp_path / f'prep{i}.log').read_text()[-2000:] for i in range(2)]
  info = data.load_manifest(str(tmp_path / 'data'))
  for split in info['splits']:
    data.verify_split(str(tmp_path / 'data'), info, split, 'full')
  # Two trainings that both auto-prepare one missing data_dir.
  procs = [_start(_train_args(tmp_path / f'run{i}', tmp_path / 'auto',
                              steps=4, source=subset_tar),
                  tmp_path / f'train{i}.log') for i in range(2)]
  assert [p.wait(timeout=300) for p in procs] == [0, 0], [
      (tmp_path / f'train{i}.log').read_text()[-2000:] for i in range(2)]
  info = data.load_manifest(str(tmp_path / 'auto'))
  for split in info['splits']:
    data.verify_split(str(tmp_path / 'auto'), info, split, 'full')
  assert not [n for n in os.listdir(tmp_path / 'auto') if '.tmp' in n]


def test_sigterm_saves_the_current_step_and_loses_none(prepared, tmp_path):
  data_dir, _ = prepared
  reference = tmp_path / 'reference'
  assert _run(_train_args(reference, data_dir)).returncode == 0
  model_dir = tmp_path / 'run'
  proc = _start(_train_args(model_dir, data_dir), tmp_path / 'run.log')
  _wait_for_step(model_dir, 13, proc)
  sent = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=60) == 75
  seconds = time.monotonic() - sent
  log = (tmp_path / 'run.log').read_text()
  line = [l for l in log.splitlines() if 'stopped by SIGTERM at step' in l]
  assert len(line) == 1, log[-3000:]
  step = int(line[0].split(' at step ')[1].split(':')[0])
  assert 13 <= step < TOTAL, step
  assert tf.train.latest_checkpoint(str(model_dir / 'checkpoints')).endswith(
      f'ckpt-{step}')
  print(f'SIGTERM to exit: {seconds:.2f} s; checkpoint at step {step}, the '
        'step the loop had reached')
  assert seconds < 30
  assert _run(_train_args(model_dir, data_dir)).returncode == 0
  summary = json.loads((model_dir / 'summary.json').read_text())
  assert summary['resumed_from_step'] == step and summary['steps'] == TOTAL
  want, got = _weights(reference), _weights(model_dir)
  assert want.keys() == got.keys()
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6,
                               err_msg=name)
  keys = _keys(model_dir)
  assert len(keys) == len(set(keys))
  assert sorted(k[0] for k in keys if k[1:] == ('train', 'loss')) == list(
      range(1, TOTAL + 1))


def test_a_second_training_into_a_busy_model_dir_stops(prepared, tmp_path):
  data_dir, _ = prepared
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time; from normprop_tf.utils import '
       'locking; lock = locking.DirectoryLock(sys.argv[1], "training")'
       '.acquire(); print("held", flush=True); time.sleep(120)',
       str(tmp_path / 'run')], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
      text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    start = time.monotonic()
    busy = _run(_train_args(tmp_path / 'run', data_dir), timeout=120)
    assert busy.returncode == 1
    line = _one_error(busy.stderr)
    assert f'is in use by pid {holder.pid}' in line and 'training' in line
    assert 'give another --model_dir' in line
    assert time.monotonic() - start < 60
    assert not (tmp_path / 'run' / 'metrics.jsonl').exists()
  finally:
    holder.kill()


def test_sigint_saves_too_and_exits_130(prepared, tmp_path):
  data_dir, _ = prepared
  model_dir = tmp_path / 'run'
  proc = _start(_train_args(model_dir, data_dir), tmp_path / 'run.log')
  _wait_for_step(model_dir, 3, proc)
  proc.send_signal(signal.SIGINT)
  assert proc.wait(timeout=60) == 130
  assert 'stopped by SIGINT at step' in (tmp_path / 'run.log').read_text()
  assert tf.train.latest_checkpoint(str(model_dir / 'checkpoints'))


def test_kill_point_states_resume_with_unique_records(prepared, tmp_path):
  data_dir, _ = prepared
  model_dir = tmp_path / 'run'
  assert _run(_train_args(model_dir, data_dir, steps=20)).returncode == 0
  # Killed during the final save: evaluation records, no summary or model.
  for name in ('summary.json', 'model.keras'):
    (model_dir / name).unlink()
  assert _run(_train_args(model_dir, data_dir, steps=20)).returncode == 0
  keys = _keys(model_dir)
  assert len(keys) == len(set(keys)) and (model_dir / 'summary.json').exists()
  # Killed during the first checkpoint: step-0 records, no checkpoint.
  tf.io.gfile.rmtree(str(model_dir / 'checkpoints'))
  for name in ('summary.json', 'config.json'):
    (model_dir / name).unlink()
  with open(model_dir / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 3, "epoch"')  # And half a line from the kill.
  proc = _run(_train_args(model_dir, data_dir, steps=20))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'half-written last line' in proc.stderr
  keys = _keys(model_dir)
  assert len(keys) == len(set(keys))
  assert (0, 'probe', 'ics/conv1/gap_mean') in keys


def test_resume_onto_a_reprepared_data_dir_and_a_corrupt_shard(
    prepared, subset_tar, tmp_path):
  work = tmp_path / 'data'
  args = [sys.executable, '-m', 'data_prep.prepare', '--dataset=cifar10',
          f'--source={subset_tar}', f'--data_dir={work}',
          '--validation_size=50']
  assert _run(args + ['--num_shards=4']).returncode == 0
  model_dir = tmp_path / 'run'
  assert _run(_train_args(model_dir, work, steps=10)).returncode == 0
  # The same images re-prepared in other shards: another data fingerprint.
  assert _run(args + ['--num_shards=2', '--overwrite']).returncode == 0
  proc = _run(_train_args(model_dir, work, steps=20))
  assert proc.returncode == 1
  assert 'data.fingerprint' in _one_error(proc.stderr)
  # A byte flipped inside a shard passes the 'size' check, then fails in
  # the middle of training: one line, not a DataLossError traceback.
  shard = sorted(work.glob('train-*.tfrecord'))[0]
  content = bytearray(shard.read_bytes())
  content[len(content) // 2] ^= 0xFF
  shard.write_bytes(bytes(content))
  proc = _run(_train_args(tmp_path / 'run2', work,
                          "input_pipeline.verify = 'size'", steps=30))
  assert proc.returncode == 1
  assert 'A data file is corrupt' in _one_error(proc.stderr)
