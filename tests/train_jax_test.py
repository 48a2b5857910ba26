"""`python -m normprop_tf.train_jax`: the Keras-only runner, under JAX.

Every run is a subprocess with `KERAS_BACKEND=jax` in which `tensorflow`
cannot be imported (a meta-path finder refuses it, as on a machine without
TensorFlow), on the real CIFAR-10 subset of tests/data_fixtures.py as a
folder of class subfolders:

- a 2-epoch run at width 0.1 completes and writes records that
  `reports.report_lib` reads as a completed run;
- its split and statistics equal the TensorFlow preparation's of the same
  images (pixels exactly; statistics within 1e-6), its recorded learning
  rates are the TensorFlow path's schedule at those steps, and its
  config.json describes the same optimizer, schedule and length;
- a rerun of a completed model_dir does nothing; an unfinished one is
  trained again from step 0 with one set of records (the runner restarts);
- SVHN from TFDS is refused with one line, and so is another backend.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from normprop_tf import data
from normprop_tf import models
from normprop_tf.training import config as cfg
from normprop_tf.training import hidden_stats
from normprop_tf.training import optimization
from reports import report_lib

pytest_plugins = ('tests.data_fixtures',)

ROOT = pathlib.Path(__file__).resolve().parents[1]
_BLOCKED_RUN = '''
import importlib.abc, runpy, sys
class NoTensorFlow(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name.split('.')[0] == 'tensorflow':
      raise ImportError(name)
sys.meta_path.insert(0, NoTensorFlow())
sys.argv = ['train_jax'] + sys.argv[1:]
try:
  runpy.run_module('normprop_tf.train_jax', run_name='__main__')
finally:
  assert not [m for m in sys.modules if m.split('.')[0] == 'tensorflow']
'''
_SETTINGS = ('nin.width = 0.1', 'trainer.epochs = 2',
             "input_pipeline.preprocessing = 'zca'",
             'train/input_pipeline.global_batch_size = 25',
             'trainer.log_every_steps = 7', 'dataset.validation_size = 50',
             'dataset.subset_per_class = None')


def _run(model_dir, data_dir, source, *bindings, backend='jax', gin='smoke'):
  args = [f'--gin_file=gin/{gin}.gin', f'--model_dir={model_dir}',
          f"--gin_bindings=dataset.data_dir = '{data_dir}'",
          f"--gin_bindings=dataset.source = '{source}'"]
  args += [f'--gin_bindings={b}' for b in bindings]
  env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS='cpu',
             CUDA_VISIBLE_DEVICES='')
  return subprocess.run([sys.executable, '-c', _BLOCKED_RUN, *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


# The tests share the 2-epoch run: one worker, one run (--dist=loadgroup).
pytestmark = pytest.mark.xdist_group('train_jax')


@pytest.fixture(scope='module')
def jax_run(subset_folder, tmp_path_factory):
  tmp = tmp_path_factory.mktemp('jax')
  proc = _run(tmp / 'run', tmp / 'data', subset_folder, *_SETTINGS)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return tmp, proc


def test_two_epochs_complete_with_records_the_report_reads(jax_run):
  tmp, _ = jax_run
  run = report_lib.load_run(str(tmp / 'run'))
  assert run.status == 'completed'
  assert set(os.listdir(tmp / 'run')) >= {
      'metrics.jsonl', 'summary.json', 'config.json', 'operative_config.gin',
      'flags.json', 'model.keras', 'core_model.keras'}
  # 350 training images / 25 = 14 steps per epoch; logged every 7 steps.
  assert [s for s, _, _ in run.series('train', 'loss')] == [7, 14, 21, 28]
  assert [s for s, _, _ in run.series('validation', 'error')] == [14, 28]
  assert 0 <= run.final_error('test') <= 1
  summary = run.summary
  assert summary['steps'] == 28 and summary['epochs'] == 2
  assert summary['hardware']['keras_backend'] == 'jax'
  assert summary['hardware']['device_kind'] and 'jax' in summary['hardware']
  assert run.flags['keras_backend'] == 'jax'
  assert run.config['model']['width'] == 0.1


def test_hidden_statistics_have_the_tensorflow_paths_tags_and_cadence(
    jax_run):
  tmp, _ = jax_run
  run = report_lib.load_run(str(tmp / 'run'))
  # hidden_stats.every_steps = 10 in smoke.gin: step 0, every 10, the end.
  assert [s for s, _, _ in run.series('probe', 'ics/conv1/gap_std')] == [
      0, 10, 20, 28]
  probe = {r['metric'] for r in run.records if r['split'] == 'probe'}
  model = models.nin('normprop', width=0.1)
  images = np.zeros((2, 32, 32, 3), np.float32)
  expected, _ = hidden_stats.HiddenStats(model, images).compute()
  assert probe == set(expected)


def test_split_statistics_and_schedule_equal_the_tensorflow_path(jax_run,
                                                                 prepared):
  tmp, _ = jax_run
  cache = tmp / 'data' / 'numpy'
  with np.load(cache / 'images.npz') as npz:
    arrays = {k: npz[k] for k in npz.files}
  tf_dir = prepared[0]
  for split in ('train', 'validation', 'test'):
    images, labels = data.read_split(tf_dir, split)
    np.testing.assert_array_equal(arrays[f'{split}_images'], images)
    np.testing.assert_array_equal(arrays[f'{split}_labels'], labels)
  tf_stats = data.load_stats(tf_dir).arrays
  with np.load(cache / 'stats.npz') as npz:
    for key in ('mean', 'std', 'zca_mean', 'zca_matrix', 'zca_out_std'):
      np.testing.assert_allclose(npz[key], tf_stats[key], rtol=0, atol=1e-6,
                                 err_msg=key)
  config = json.loads((tmp / 'run' / 'config.json').read_text())
  schedule = optimization.learning_rate_schedule(
      cfg.ScheduleConfig(**config['lr_schedule']),
      config['optimizer']['learning_rate'], config['length']['total_steps'])
  rows = report_lib.read_jsonl(str(tmp / 'run' / 'metrics.jsonl'))
  logged = [(r['step'], r['value']) for r in rows
            if r['split'] == 'train' and r['metric'] == 'learning_rate']
  # After step s the optimizer has taken s steps: the rate of iteration s.
  assert logged and all(
      value == pytest.approx(float(schedule(step)), rel=1e-6)
      for step, value in logged), logged
  assert config['length'] == {'total_steps': 28, 'steps_per_epoch': 14}


def test_completed_run_is_left_alone_and_unfinished_restarts(jax_run,
                                                             subset_folder):
  tmp, _ = jax_run
  metrics = (tmp / 'run' / 'metrics.jsonl').read_text()
  proc = _run(tmp / 'run', tmp / 'data', subset_folder, *_SETTINGS)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'nothing to do' in proc.stderr
  assert (tmp / 'run' / 'metrics.jsonl').read_text() == metrics
  # An attempt that died: records, no summary. The runner starts again.
  (tmp / 'run' / 'summary.json').unlink()
  proc = _run(tmp / 'run', tmp / 'data', subset_folder, *_SETTINGS)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'does not resume: training again from step 0' in proc.stderr
  rows = report_lib.read_jsonl(str(tmp / 'run' / 'metrics.jsonl'))
  keys = [(r['step'], r['split'], r['metric']) for r in rows]
  assert len(keys) == len(set(keys))  # One set of records.
  assert (tmp / 'run' / 'metrics.jsonl').read_text() != ''


def test_no_offline_copy_and_wrong_backend_are_one_line_errors(tmp_path):
  proc = _run(tmp_path / 'run', tmp_path / 'data', 'tfds', gin='nin_svhn')
  assert proc.returncode == 1, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines()
           if l.startswith('normprop_tf.train_jax: error: ')]
  assert len(lines) == 1 and 'TFDS needs TensorFlow' in lines[0]
  assert 'No offline copy of svhn comes with this project' in lines[0]
  assert 'svhn-python' not in lines[0]  # SVHN ships no python archive.
  assert 'Traceback' not in proc.stderr
  proc = subprocess.run(
      [sys.executable, '-m', 'normprop_tf.train_jax', '--gin_file=gin/smoke.gin',
       f'--model_dir={tmp_path / "run2"}'], cwd=ROOT, capture_output=True,
      text=True, timeout=120,
      env=dict(os.environ, KERAS_BACKEND='numpy'))
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert 'KERAS_BACKEND=jax python -m normprop_tf.train_jax' in proc.stderr
