"""Faults that need real processes: concurrency, signals, kill points.

Each runs the real binaries on the prepared CIFAR-10 subset
(tests/data_fixtures.py) with a tiny NIN (width 0.05):

- two preparations of one missing data_dir at once (the command line, and
  two trainings that auto-prepare it) both succeed, and the data_dir is
  valid (every shard's sha256 checked);
- a second training into a busy model_dir stops at once with one line;
- SIGINT exits with 130, with a checkpoint saved (SIGTERM, and resuming
  after it, is in tests/train_resume_test.py);
- states a kill leaves (records but no checkpoint; a final evaluation but
  no summary) resume with metrics.jsonl keyed and unique;
- a resume onto a re-prepared data_dir, and a shard corrupted past a 'size'
  check, end in one line each.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import tensorflow as tf

from normprop_tf import data
from normprop_tf.utils import locking
from tests import runs
from tests.data_fixtures import ROOT

pytest_plugins = ('tests.data_fixtures',)

TOTAL = 40


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
  runs.wait_for_step(model_dir, 3, proc)
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
  keys = runs.metric_keys(model_dir)
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
  keys = runs.metric_keys(model_dir)
  assert len(keys) == len(set(keys))
  assert (0, 'probe', 'ics/conv1/gap_mean') in keys


def test_resume_onto_a_reprepared_data_dir_and_a_corrupt_shard(
    prepared, subset_tar, tmp_path):
  work = tmp_path / 'data'
  args = [sys.executable, '-m', 'data_prep.prepare', '--dataset=cifar10',
          f'--source={subset_tar}', f'--data_dir={work}',
          '--validation_size=50', '--nozca']  # smoke.gin standardizes.
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
