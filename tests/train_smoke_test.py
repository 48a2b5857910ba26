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
import re
import shlex
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import hparams_plugin
from tensorboard.plugins.scalar import scalars_plugin
from tensorboard.util import tensor_util
from werkzeug import test as werkzeug_test

from normprop_tf import data
from normprop_tf import models
from normprop_tf.utils import console
from tests import runs
from tests.data_fixtures import ROOT
from tests.data_fixtures import TARBALL
EVAL_SCALARS = {'loss', 'accuracy', 'error'}
SCALARS = EVAL_SCALARS | {'learning_rate', 'sec_per_step', 'images_per_sec'}
HIDDEN = [f'conv{i}' for i in range(1, 9)]


def _readme_commands():
  """The README's two commands that compare NormProp and BN in TensorBoard."""
  text = (ROOT / 'README.md').read_text()
  block = next(b for b in re.findall(r'```sh\n(.*?)```', text, re.S)
               if 'runs/compare' in b)
  commands = [shlex.split(l) for l in block.splitlines()
              if l.startswith('python -m normprop_tf.train ')]
  assert len(commands) == 2 and 'tensorboard --logdir=runs/compare' in block
  return commands


def _train(command, tmp):
  """Runs a README command with its data and runs redirected into `tmp`."""
  args = [a.replace('runs/compare', str(tmp / 'compare')) for a in command[1:]]
  proc = subprocess.run(
      [sys.executable, *args,
       f"--gin_bindings=dataset.data_dir = '{tmp / 'data'}'",
       f"--gin_bindings=dataset.source = '{TARBALL}'"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
  assert proc.returncode == 0, proc.stderr[-5000:]
  return proc


# Every test reads the README's two runs: one worker, one run
# (--dist=loadgroup).
pytestmark = pytest.mark.xdist_group('train_smoke')


@pytest.fixture(scope='module')
def smoke_runs(tmp_path_factory):
  """(tmp, {run name: stderr}): the README's NormProp and BN commands."""
  if not TARBALL.is_file():
    # A failure, not a skip: this is the end-to-end coverage.
    pytest.fail(f'{TARBALL} not found: the real CIFAR-10 copy must sit at '
                '../shared/data/ beside the project (README.md, "Tests").')
  tmp = tmp_path_factory.mktemp('smoke')
  normprop, batchnorm = _readme_commands()
  return tmp, {'normprop': _train(normprop, tmp).stderr,
               'batchnorm': _train(batchnorm, tmp).stderr}


@pytest.fixture(scope='module')
def smoke_run(smoke_runs):
  """(model_dir, stderr) of the NormProp run: gin/smoke.gin as it is."""
  tmp, stderr = smoke_runs
  return tmp / 'compare' / 'normprop', stderr['normprop']


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

  rows = runs.metric_rows(model_dir)
  assert all(set(r) == {'step', 'epoch', 'split', 'metric', 'value', 'seed',
                        'config'} for r in rows)
  assert {r['config'] for r in rows} == {'smoke'}
  by_split = {}
  for r in rows:
    by_split.setdefault(r['split'], set()).add(r['metric'])
  assert by_split['train'] == SCALARS
  for split in ('validation', 'test'):  # No throughput or learning rate.
    assert by_split[split] == EVAL_SCALARS, split
  assert 'ics/conv8/gap_mean' in by_split['probe']
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
  images, labels = data.read_split(str(model_dir.parents[1] / 'data'), 'test')
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
    assert tags['scalars'] >= (SCALARS if split == 'train' else EVAL_SCALARS)
    if split != 'train':
      assert not tags['scalars'] & {'learning_rate', 'sec_per_step',
                                    'images_per_sec'}, split
  acc, _ = _events(model_dir / 'train')
  steps = [e.step for e in acc.Tensors('loss')]
  assert steps == [5, 10, 15, 20, 25, 30]
  lrs = [float(tf.make_ndarray(e.tensor_proto)) for e in
         acc.Tensors('learning_rate')]
  assert lrs[0] == pytest.approx(0.05) and lrs[-1] == pytest.approx(5e-4)


def test_tensorboard_hidden_layer_statistics(smoke_run):
  model_dir, _ = smoke_run
  assert sorted(p.name for p in model_dir.iterdir() if p.is_dir() and any(
      f.name.startswith('events.') for f in p.iterdir())) == [
          'test', 'train', 'validation']  # No run of its own for the probe.
  acc, tags = _events(model_dir / 'train')
  for layer in HIDDEN:
    for part in ('preactivation', 'normalized', 'output'):
      assert {f'stats/{layer}/{part}/mean', f'stats/{layer}/{part}/std'} <= (
          tags['scalars']), layer
      assert f'stats/{layer}/{part}' in tags['histograms']
    # NormProp: its parametric estimate vs the true statistics.
    for gap in ('gap_mean', 'gap_std', 'output_gap_mean', 'output_gap_std'):
      assert f'ics/{layer}/{gap}' in tags['scalars']
    assert f'weights/{layer}/scale' in tags['histograms']
  assert 'ics/mean_over_layers/gap_std' in tags['scalars']
  assert acc.SummaryMetadata('ics/conv1/gap_std').summary_description
  # Every 10 steps, and at initialization.
  assert [e.step for e in acc.Tensors('ics/conv1/gap_mean')] == [
      0, 10, 20, 30]
  for layer in HIDDEN + ['classifier']:
    assert f'weights/{layer}/kernel_norm' in tags['histograms']


def test_tensorboard_hparams_and_config_text(smoke_run):
  model_dir, _ = smoke_run
  acc, tags = _events(model_dir)
  assert {'_hparams_/experiment', '_hparams_/session_start_info'} <= (
      tags['hparams'])
  text = tf.make_ndarray(acc.Tensors('operative_config')[0].tensor_proto)
  assert b"nin.norm = 'normprop'" in text.item()


def test_progress_has_eta(smoke_run):
  _, stderr = smoke_run
  lines = [l for l in stderr.splitlines() if '[normprop] step ' in l]
  assert len(lines) == 6, stderr[-3000:]
  assert all('ETA' in l and 'img/s' in l for l in lines)
  assert 'step 30/30 (epoch 3.00)' in lines[-1]


def _session_groups(logdir):
  """The HParams plugin's own answer, as TensorBoard's frontend asks for it."""
  mux = plugin_event_multiplexer.EventMultiplexer()
  mux.AddRunsFromDirectory(str(logdir))
  mux.Reload()
  context = base_plugin.TBContext(
      logdir=str(logdir), multiplexer=mux, plugin_name_to_instance={},
      data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)))
  context.plugin_name_to_instance['scalars'] = scalars_plugin.ScalarsPlugin(
      context)
  app = hparams_plugin.HParamsPlugin(context).get_plugin_apps()[
      '/session_groups']
  request = werkzeug_test.EnvironBuilder(
      method='POST', path='/session_groups', content_type='application/json',
      data=json.dumps({'startIndex': 0, 'sliceSize': 100,
                       'allowedStatuses': ['STATUS_UNKNOWN']})).get_environ()
  return json.loads(b''.join(app(request, lambda *args, **kwargs: None)))[
      'sessionGroups']


def test_hparams_one_trial_per_run_with_its_own_metrics(smoke_runs):
  """Two runs of one gin file, differing by one binding: two trials."""
  tmp, _ = smoke_runs
  groups = _session_groups(tmp / 'compare')
  assert len(groups) == 2
  by_norm = {g['hparams']['model.norm']: g for g in groups}
  assert set(by_norm) == {'normprop', 'batchnorm'}
  for norm, group in by_norm.items():
    summary = json.loads(
        (tmp / 'compare' / norm / 'summary.json').read_text())
    assert group['name'] == summary['trial_id']
    assert summary['trial_id'].startswith(f'{norm}-')
    assert summary['run'] == norm and summary['config'] == 'smoke'
    values = {(m['name']['group'], m['name']['tag']): m['value']
              for m in group['metricValues']}
    # TensorBoard shows error in percent; summary.json keeps the fraction.
    assert values[('validation', 'error')] == pytest.approx(
        100 * summary['final_validation_error'], rel=1e-6)
    assert values[('test', 'error')] == pytest.approx(
        100 * summary['final_test_error'], rel=1e-6)
  differing = {k for k in by_norm['normprop']['hparams']
               if by_norm['normprop']['hparams'][k] !=
               by_norm['batchnorm']['hparams'].get(k)}
  assert differing == {'model.norm'}


def test_custom_scalars_put_both_methods_on_each_chart(smoke_runs):
  tmp, _ = smoke_runs
  train_tags = {}
  for norm in ('normprop', 'batchnorm'):
    _, tags = _events(tmp / 'compare' / norm / 'train')
    train_tags[norm] = tags['scalars']
    acc, root_tags = _events(tmp / 'compare' / norm)
  layout = layout_pb2.Layout.FromString(tensor_util.make_ndarray(
      acc.Tensors('custom_scalars__config__')[0].tensor_proto).item())
  titles = [c.title for c in layout.category]
  assert titles == ['Training',
                    'Covariate shift: estimate gap, averaged over layers',
                    'Covariate shift: |std gap| per layer',
                    'Covariate shift: |mean gap| per layer']
  charts = (list(layout.category[1].chart)[:2] + list(layout.category[2].chart)
            + list(layout.category[3].chart))
  for chart in charts:  # Each method has a line on every gap chart.
    for norm, tags in train_tags.items():
      assert any(re.search(p, t) for p in chart.multiline.tag
                 for t in tags), (chart.title, norm)
  assert [c.title for c in layout.category[2].chart] == [
      f'{layer} |std gap|' for layer in HIDDEN]


def test_console_shows_only_the_projects_lines(smoke_runs):
  _, stderr = smoke_runs
  for name, text in stderr.items():
    lines = [l for l in text.splitlines() if l.strip()]
    assert not [l for l in lines if console.is_noise(l)], name
    # Every line is one of ours: a short time stamp, no absl prefix.
    assert all(re.match(r'\d\d:\d\d:\d\d ', l) for l in lines), [
        l for l in lines if not re.match(r'\d\d:\d\d:\d\d ', l)][:5]
