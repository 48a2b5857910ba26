"""`gin/smoke.gin` end to end through the real binary, and its artifacts.

One subprocess runs `python -m normprop_tf.train --gin_file=gin/smoke.gin`
exactly as a user would, except that data_dir points into a temporary
directory. smoke.gin prepares its own subset of the real CIFAR-10 copy there
(30 train + 10 test images per class), trains a width-0.1 NormProp NIN for 30
steps, and writes every artifact. The TensorBoard events are read back with
EventAccumulator (TF2 scalars are stored as tensors: `Tags()['tensors']`,
with size_guidance={'tensors': 0} to keep every point).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from normprop_tf import data
from normprop_tf import models
from tests.data_fixtures import ROOT
from tests.data_fixtures import TARBALL
SCALARS = {'loss', 'accuracy', 'error', 'learning_rate', 'sec_per_step',
           'images_per_sec'}
HIDDEN = [f'conv{i}' for i in range(1, 9)]


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  if not TARBALL.is_file():
    # A failure, not a skip: this is the end-to-end coverage.
    pytest.fail(f'{TARBALL} not found: the real CIFAR-10 copy must sit at '
                '../shared/data/ beside the project (README.md, "Tests").')
  tmp = tmp_path_factory.mktemp('smoke')
  model_dir = tmp / 'run'
  proc = subprocess.run(
      [sys.executable, '-m', 'normprop_tf.train', '--gin_file=gin/smoke.gin',
       f"--gin_bindings=dataset.data_dir = '{tmp / 'data'}'",
       f"--gin_bindings=dataset.source = '{TARBALL}'",
       f'--model_dir={model_dir}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
  assert proc.returncode == 0, proc.stderr[-5000:]
  return model_dir, proc.stderr


def _events(path):
  acc = event_accumulator.EventAccumulator(
      str(path), size_guidance={'tensors': 0})
  acc.Reload()
  tags = {}
  for tag in acc.Tags()['tensors']:
    plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
    tags.setdefault(plugin, set()).add(tag)
  return acc, tags


def test_plain_files(smoke_run):
  model_dir, _ = smoke_run
  assert (model_dir / 'operative_config.gin').read_text().count(
      "nin.norm = 'normprop'") == 1
  flags = json.loads((model_dir / 'flags.json').read_text())
  assert flags['gin_file'] == ['gin/smoke.gin']
  assert flags['command'].startswith('python -m normprop_tf.train ')

  summary = json.loads((model_dir / 'summary.json').read_text())
  assert summary['status'] == 'completed'
  assert summary['steps'] == 30 and summary['epochs'] == 3
  for key in ('final_validation_error', 'final_test_error'):
    assert 0 <= summary[key] <= 1
  assert summary['wall_time_seconds'] > 0
  assert summary['hardware']['cpu_count'] >= 1
  assert summary['hardware']['tensorflow'] == tf.__version__

  rows = [json.loads(l) for l in
          (model_dir / 'metrics.jsonl').read_text().splitlines()]
  assert all(set(r) == {'step', 'epoch', 'split', 'metric', 'value', 'seed',
                        'config'} for r in rows)
  assert {r['config'] for r in rows} == {'smoke'}
  by_split = {}
  for r in rows:
    by_split.setdefault(r['split'], set()).add(r['metric'])
  for split in ('train', 'validation', 'test'):
    assert by_split[split] == SCALARS, split
  assert 'hidden/conv8/gap_mean' in by_split['probe']
  train_steps = sorted({r['step'] for r in rows if r['split'] == 'train'})
  assert train_steps == [5, 10, 15, 20, 25, 30]
  final_test = [r for r in rows if r['split'] == 'test' and
                r['metric'] == 'error']
  assert final_test[-1]['value'] == pytest.approx(summary['final_test_error'])


def test_checkpoints_and_final_models(smoke_run):
  model_dir, _ = smoke_run
  assert tf.train.latest_checkpoint(str(model_dir / 'checkpoints')).endswith(
      'ckpt-30')
  core = keras.saving.load_model(model_dir / 'core_model.keras')
  assert models.norm_kind(core) == 'normprop'
  on_pixels = keras.saving.load_model(model_dir / 'model.keras')
  exported = tf.saved_model.load(str(model_dir / 'saved_model'))
  pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(
      np.float32)
  np.testing.assert_allclose(exported.serve(pixels).numpy(),
                             on_pixels(pixels).numpy(), rtol=1e-5, atol=1e-5)
  stats = data.load_stats(str(model_dir / 'input_statistics'))
  standardized = (pixels.reshape(4, -1) - stats.arrays['mean']) / (
      stats.arrays['std'] + 1e-3)
  np.testing.assert_allclose(
      on_pixels(pixels).numpy(),
      core(standardized.reshape(4, 32, 32, 3).astype(np.float32)).numpy(),
      rtol=1e-4, atol=1e-4)


_RAW_PIXELS = """
import importlib.abc, json, sys
import numpy as np
class NoProject(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name.split('.')[0] in ('normprop_tf', 'data_prep'):
      raise ImportError(name)
sys.meta_path.insert(0, NoProject())
import tensorflow as tf
exported = tf.saved_model.load(sys.argv[1])  # Keep it: it owns the weights.
images, labels = np.load(sys.argv[2]), np.load(sys.argv[3])
logits = exported.serve(images.astype(np.float32)).numpy()
print(json.dumps({'accuracy': float(np.mean(logits.argmax(1) == labels))}))
"""


def test_the_saved_model_takes_raw_pixels_without_the_library(smoke_run,
                                                             tmp_path):
  """Raw uint8 test images in, the pipeline's test accuracy out."""
  model_dir, _ = smoke_run
  images, labels = data.read_split(str(model_dir.parent / 'data'), 'test')
  np.save(tmp_path / 'x.npy', images)
  np.save(tmp_path / 'y.npy', labels)
  proc = subprocess.run(
      [sys.executable, '-c', _RAW_PIXELS, str(model_dir / 'saved_model'),
       str(tmp_path / 'x.npy'), str(tmp_path / 'y.npy')], capture_output=True,
      text=True, timeout=300, cwd=tmp_path,
      env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
  assert proc.returncode == 0, proc.stderr[-3000:]
  accuracy = json.loads(proc.stdout.strip().splitlines()[-1])['accuracy']
  summary = json.loads((model_dir / 'summary.json').read_text())
  # 1 - error of the pipeline's own evaluation; one image of slack for the
  # float32 rounding of the normalization inside the model.
  assert abs(accuracy - summary['final']['test']['accuracy']) <= 1 / len(
      labels)


def test_tensorboard_scalars(smoke_run):
  model_dir, _ = smoke_run
  for split in ('train', 'validation', 'test'):
    acc, tags = _events(model_dir / split)
    assert SCALARS <= tags['scalars'], (split, tags)
  acc, _ = _events(model_dir / 'train')
  steps = [e.step for e in acc.Tensors('loss')]
  assert steps == [5, 10, 15, 20, 25, 30]
  lrs = [float(tf.make_ndarray(e.tensor_proto)) for e in
         acc.Tensors('learning_rate')]
  assert lrs[0] == pytest.approx(0.05) and lrs[-1] == pytest.approx(5e-4)


def test_tensorboard_hidden_layer_statistics(smoke_run):
  model_dir, _ = smoke_run
  acc, tags = _events(model_dir / 'probe')
  for layer in HIDDEN:
    for part in ('preactivation', 'normalized', 'output'):
      assert {f'hidden/{layer}/{part}/mean', f'hidden/{layer}/{part}/std'} <= (
          tags['scalars']), layer
      assert f'hidden/{layer}/{part}' in tags['histograms']
    # NormProp: its parametric estimate vs the true statistics.
    for gap in ('gap_mean', 'gap_std', 'output_gap_mean', 'output_gap_std'):
      assert f'hidden/{layer}/{gap}' in tags['scalars']
  # Every 10 steps, and at initialization.
  assert [e.step for e in acc.Tensors('hidden/conv1/gap_mean')] == [
      0, 10, 20, 30]
  _, train_tags = _events(model_dir / 'train')
  for layer in HIDDEN + ['classifier']:
    assert f'weights/{layer}/kernel_norm' in train_tags['histograms']


def test_tensorboard_hparams_and_config_text(smoke_run):
  model_dir, _ = smoke_run
  acc, tags = _events(model_dir)
  assert {'_hparams_/experiment', '_hparams_/session_start_info'} <= (
      tags['hparams'])
  text = tf.make_ndarray(acc.Tensors('operative_config')[0].tensor_proto)
  assert b"nin.norm = 'normprop'" in text.item()


def test_progress_has_eta(smoke_run):
  _, stderr = smoke_run
  lines = [l for l in stderr.splitlines() if '[smoke] step ' in l]
  assert len(lines) == 6, stderr[-3000:]
  assert all('ETA' in l and 'img/s' in l for l in lines)
  assert 'step 30/30 (epoch 3.00)' in lines[-1]
