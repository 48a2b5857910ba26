"""Two local workers (MultiWorkerMirroredStrategy) train `gin/smoke.gin`.

Each worker is the real binary, `python -m normprop_tf.train`, in its own
subprocess with a TF_CONFIG naming two 127.0.0.1 ports, exactly as on two
hosts (which would share model_dir on a network file system or gs://).

1. Agreement and chief-only writing: the two workers finish together; only
   the chief (worker 0) writes into model_dir (every event file carries its
   pid, flags.json its working directory, and no temporary checkpoint
   directory of worker 1 is left), and the result matches a single-process
   run with the same global batch (20).

   The runs use `input_pipeline.shard_by = 'batches'`: every worker reads the
   split like the single process and keeps its half of each global batch,
   so both runs see the same 20 examples at every step and differ only in
   float32 summation order (each replica sums 10 per-example gradients,
   then the all-reduce adds the halves). Measured on this CPU (12 steps of
   NormProp at lr 0.05 with momentum 0.9, step decay): every loss record
   (12 train steps, final validation and test) agrees to 2.1e-7 relative,
   the final weights to 2.4e-7 absolute. We assert 1e-5 on both: ~50x the
   round-off measured here, and >1000x below what a different batch
   composition does (with the default `input_sharding = 'files'`, where
   each worker reads its own files, the step-6 train loss of a 6-step
   smoke run differed by 4e-2 relative).

2. Fault: one worker is SIGKILLed right after a checkpoint, first worker
   1, then, in the resumed job, the chief (which also hosts TF's
   coordination service). The survivor's next collective fails at once
   (the dead peer's connection closes: UnavailableError, ~1-3 s after the
   kill here), and the survivor exits with status 1 and a one-paragraph
   message naming the checkpoint to resume from, no traceback. Rerunning
   both commands resumes from the chief's latest checkpoint, whose step is
   exactly the resumed run's starting step, and finishes; every step's
   train loss is then recorded exactly once. (These runs use the default
   `input_sharding = 'files'`.)

3. Hang: a peer that is alive but never joins a collective (stopped,
   partitioned) would block the other one forever; the collective timeout
   set by `strategies.create_strategy` (300 s in training, 3 s here) turns
   it into DeadlineExceededError, reported by the same message.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from tests import runs
from tests.data_fixtures import fixture_bindings

pytest_plugins = ('tests.data_fixtures',)

ROOT = pathlib.Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 20
TIMEOUT = 150  # Per subprocess; a smoke worker takes ~10-20 s here.


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def _command(data_dir, model_dir, steps, checkpoint_every, multi_worker,
             input_sharding='batches'):
  bindings = [
      *fixture_bindings(data_dir), 'dataset.source = None',
      f'train/input_pipeline.global_batch_size = {GLOBAL_BATCH}', 'trainer.epochs = None',
      f'trainer.train_steps = {steps}',
      f'trainer.checkpoint_every_steps = {checkpoint_every}',
      'trainer.log_every_steps = 1', 'hidden_stats.every_steps = 6',
      'trainer.eval_every_steps = 0', f"input_pipeline.shard_by = '{input_sharding}'"]
  if multi_worker:
    bindings.append("strategy.name = 'multi_worker'")
  return ([sys.executable, '-m', 'normprop_tf.train',
           f'--gin_file={ROOT / "gin" / "smoke.gin"}',
           f'--model_dir={model_dir}'] +
          [f'--gin_bindings={b}' for b in bindings])


def _env(tf_config=None):
  env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
  env.pop('TF_CONFIG', None)
  if tf_config:
    env['TF_CONFIG'] = json.dumps(tf_config)
  return env


class _Worker:
  """One worker process; stdout/stderr go to files (no pipe deadlock)."""

  def __init__(self, command, ports, index, log_dir, cwd):
    tf_config = {'cluster': {'worker': [f'127.0.0.1:{p}' for p in ports]},
                 'task': {'type': 'worker', 'index': index}}
    self.log = log_dir / f'worker{index}_{time.monotonic_ns()}.log'
    self._file = open(self.log, 'w')
    self.proc = subprocess.Popen(command, cwd=cwd, env=_env(tf_config),
                                 stdout=self._file, stderr=subprocess.STDOUT)

  def wait(self, timeout=TIMEOUT):
    try:
      self.proc.wait(timeout=timeout)
    finally:
      if self.proc.poll() is None:
        self.proc.kill()
        self.proc.wait()
      self._file.close()
    return self.proc.returncode

  @property
  def output(self):
    return self.log.read_text()


def _run_cluster(command, ports, tmp_path, cwds=None):
  cwds = cwds or [ROOT, ROOT]
  workers = [_Worker(command, ports, i, tmp_path, cwds[i]) for i in range(2)]
  codes = [w.wait() for w in workers]
  for w, code in zip(workers, codes):
    assert code == 0, w.output[-5000:]
  return workers


def _losses(model_dir):
  out = {}
  for r in runs.metric_rows(model_dir):
    if r['metric'] == 'loss':
      assert (r['split'], r['step']) not in out, r  # Recorded once.
      out[(r['split'], r['step'])] = r['value']
  return out


def _weights(model_dir):
  import keras  # pylint: disable=g-import-not-at-top
  import normprop_tf  # pylint: disable=g-import-not-at-top,unused-import
  return keras.saving.load_model(model_dir / 'model.keras').get_weights()


def _files(model_dir):
  """Relative paths, with event-file names reduced to their directory."""
  out = set()
  for path in model_dir.rglob('*'):
    rel = path.relative_to(model_dir).as_posix()
    out.add(re.sub(r'events\.out\.tfevents\.[^/]*$', 'EVENTS', rel))
  return out


def test_two_workers_match_one_process_and_only_the_chief_writes(
    prepared, tmp_path):
  data_dir, _ = prepared
  single_dir, multi_dir = tmp_path / 'single', tmp_path / 'multi'
  steps = 12
  single = subprocess.run(
      _command(data_dir, single_dir, steps, 6, multi_worker=False), cwd=ROOT,
      env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
  assert single.returncode == 0, single.stderr[-5000:]

  # Worker 1 runs from another working directory, so that flags.json shows
  # which process wrote it.
  other_cwd = tmp_path / 'worker1_cwd'
  other_cwd.mkdir()
  workers = _run_cluster(
      _command(data_dir, multi_dir, steps, 6, multi_worker=True),
      _free_ports(2), tmp_path, cwds=[ROOT, other_cwd])
  chief_pid = workers[0].proc.pid

  # Only the chief wrote: the same files as a single-process run, every
  # event file from the chief's pid, nothing left by worker 1.
  assert _files(multi_dir) == _files(single_dir)
  assert not [p for p in multi_dir.rglob('*') if 'tmp_worker' in p.name]
  events = list(multi_dir.rglob('events.out.tfevents.*'))
  assert len(events) >= 4  # root (hparams), train (and probe), validation, test
  for path in events:
    assert int(path.name.split('.')[-3]) == chief_pid, path
  flags = json.loads((multi_dir / 'flags.json').read_text())
  assert flags['cwd'] == str(ROOT)
  assert not list(other_cwd.iterdir())

  summary = json.loads((multi_dir / 'summary.json').read_text())
  reference = json.loads((single_dir / 'summary.json').read_text())
  assert summary['strategy'] == 'multi_worker'
  assert summary['hardware']['replicas'] == 2
  assert reference['hardware']['replicas'] == 1
  assert summary['steps'] == reference['steps'] == steps

  # Same global batches: the losses agree to float32 round-off for the
  # first steps (measured: <= 1.1e-7 relative through step 6). Later steps
  # drift apart (measured: 5e-6 at step 7, at most 3.9e-4 by step 12, with
  # or without the learning-rate decay): 1e-7 differences in the batched
  # convolutions break exact ties in max pooling (saturated JPEG pixels give
  # equal outputs), which routes a gradient to another tap. A wrong global
  # batch would differ by ~1e-2 from step 1.
  losses, reference_losses = _losses(multi_dir), _losses(single_dir)
  assert losses.keys() == reference_losses.keys()
  assert len([k for k in losses if k[0] == 'train']) == steps
  gaps = {k: abs(losses[k] - v) / abs(v) for k, v in reference_losses.items()}
  weight_gap = max(float(np.max(np.abs(a - b))) for a, b in
                   zip(_weights(multi_dir), _weights(single_dir)))
  print(f'max relative loss gap {max(gaps.values()):.2e}, max absolute '
        f'weight gap {weight_gap:.2e}')
  early = [g for (split, step), g in gaps.items()
           if split == 'train' and step <= 6]
  assert max(early) < 1e-6, gaps
  assert max(gaps.values()) < 2e-3, gaps
  assert weight_gap < 2e-3
  # The same error rates, give or take the one prediction such a drift can
  # flip (two logits closer than ~1e-3).
  for split, count in (('validation', 50), ('test', 100)):
    assert abs(summary['final'][split]['error'] -
               reference['final'][split]['error']) <= 1 / count + 1e-12


def _kill_one_and_check_the_survivor(workers, victim, model_dir, after_step,
                                     steps):
  """SIGKILLs `workers[victim]` at the first checkpoint past `after_step`;
  the other one must stop by itself. Returns the checkpoint's step."""
  other, survivor = workers[victim], workers[1 - victim]
  checkpoints = str(model_dir / 'checkpoints')
  deadline = time.monotonic() + TIMEOUT
  try:
    while True:
      latest = tf.train.latest_checkpoint(checkpoints)
      if latest and int(latest.rsplit('-', 1)[1]) > after_step:
        break
      for w in workers:
        assert w.proc.poll() is None, w.output[-5000:]
      assert time.monotonic() < deadline, 'no checkpoint in time'
      time.sleep(0.02)
    other.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
  except BaseException:
    survivor.proc.kill()
    raise
  finally:
    other.wait(timeout=30)
  assert other.proc.returncode == -signal.SIGKILL

  # The survivor stops by itself, quickly, with a clear message.
  code = survivor.wait(timeout=120)
  stop_seconds = time.monotonic() - killed_at
  output = survivor.output
  assert code == 1, output[-5000:]
  assert 'Traceback' not in output, output[-5000:]
  messages = [l for l in output.splitlines()
              if l.startswith('normprop_tf.train: error: ')]
  assert len(messages) == 1, output[-5000:]
  assert 'Lost contact with another worker' in messages[0]
  assert 'Restart every worker with the same command' in messages[0]
  print(f'worker {victim} killed; the survivor stopped {stop_seconds:.1f} s '
        f'later: {messages[0]}')
  assert stop_seconds < 60
  assert not (model_dir / 'summary.json').exists(), 'killed too late'
  latest = tf.train.latest_checkpoint(checkpoints)
  last_step = int(latest.rsplit('-', 1)[1])
  assert after_step < last_step < steps
  assert latest in messages[0]
  return last_step


def test_a_killed_worker_stops_the_job_and_a_rerun_resumes(prepared,
                                                           tmp_path):
  """SIGKILL worker 1, rerun both commands, then SIGKILL the chief (which
  also runs TF's coordination service): each time the other worker stops
  by itself, and the same two commands resume from the chief's latest
  checkpoint."""
  data_dir, _ = prepared
  model_dir = tmp_path / 'run'
  steps = 20  # Checkpoints at 5, 10, 15: one kill at 5, one at 10.
  # The default sharding here (each worker reads its own files), so that
  # both modes are covered; resuming skips the consumed batches in either.
  command = _command(data_dir, model_dir, steps, 5, multi_worker=True,
                     input_sharding='files')
  ports = _free_ports(2)
  last_step = 0
  for victim in (1, 0):
    workers = [_Worker(command, ports, i, tmp_path, ROOT) for i in range(2)]
    resumed_from = last_step
    last_step = _kill_one_and_check_the_survivor(workers, victim, model_dir,
                                                 last_step, steps)
    if resumed_from:
      assert (f'Resuming at step {resumed_from} of {steps}' in
              workers[0].output), workers[0].output[-5000:]

  # The same two commands again: resume from that checkpoint and finish.
  chief, _ = _run_cluster(command, ports, tmp_path)
  assert f'Resuming at step {last_step} of {steps}' in chief.output
  summary = json.loads((model_dir / 'summary.json').read_text())
  assert summary['resumed_from_step'] == last_step
  assert summary['steps'] == steps
  # Every step's train loss is recorded exactly once (`_losses` checks),
  # those up to each checkpoint by the run that wrote it.
  train_steps = sorted(s for split, s in _losses(model_dir)
                       if split == 'train')
  assert train_steps == list(range(1, steps + 1))
  assert not [p for p in model_dir.rglob('*') if 'tmp_worker' in p.name]


_HANG_SCRIPT = """
import json, os, sys, time
import tensorflow as tf
from normprop_tf.training import strategies
strategy = strategies.create_strategy('multi_worker', collective_timeout=3)
index = json.loads(os.environ['TF_CONFIG'])['task']['index']
total = tf.function(lambda: strategy.reduce(
    'SUM', strategy.run(lambda: tf.constant(1.0)), axis=None))
print('first', float(total()), flush=True)
if index == 1:
  time.sleep(300)  # Alive but never joins the next collective.
start = time.monotonic()
try:
  total()
except tf.errors.OpError as e:
  failure = strategies.cluster_failure(e, strategy, sys.argv[1])
  print('seconds', time.monotonic() - start, flush=True)
  print('message', failure, flush=True)
"""


def test_collective_timeout_ends_the_wait_for_a_hung_peer(tmp_path):
  """A peer that is alive but stuck is caught by the collective timeout."""
  ports = _free_ports(2)
  command = [sys.executable, '-c', _HANG_SCRIPT, str(tmp_path)]
  chief, stuck = [_Worker(command, ports, i, tmp_path, ROOT)
                  for i in range(2)]
  try:
    assert chief.wait(timeout=TIMEOUT) == 0, chief.output[-5000:]
  finally:
    stuck.proc.kill()
    stuck.wait()
  lines = dict(l.split(' ', 1) for l in chief.output.splitlines()
               if l.startswith(('first ', 'seconds ', 'message ')))
  assert lines['first'] == '2.0'  # Both workers took part once.
  assert 2.5 < float(lines['seconds']) < 30, lines
  assert lines['message'].startswith(
      'Lost contact with another worker of the multi_worker cluster '
      '(DeadlineExceededError'), lines
