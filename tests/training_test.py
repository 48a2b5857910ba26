"""Unit tests of the training components, in process.

Fast checks of what the end-to-end tests cannot see directly: the hidden
statistics' gap arithmetic against a NumPy reference, the learning-rate
schedule, weight decay exclusions, mixed precision, strategy selection,
record truncation on resume. Each builder is called on its own, without
gin and without the others.
"""

import json

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from normprop_tf import diagnostics
from normprop_tf import models
from normprop_tf import tags
from normprop_tf.training import artifacts
from normprop_tf.training import builders
from normprop_tf.training import config as cfg
from normprop_tf.training import errors
from normprop_tf.training import experiment
from normprop_tf.training import gin_config
from normprop_tf.training import hidden_stats as layer_stats
from normprop_tf.training import progress
from normprop_tf.training import records
from normprop_tf.training import summaries
from normprop_tf.training import strategies
from normprop_tf.utils import checks

from tests.data_fixtures import VALIDATION_SIZE

pytest_plugins = ('tests.data_fixtures',)


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.mark.parametrize('norm', ['normprop', 'batchnorm'])
def test_hidden_stats_in_a_tf_function_equal_the_eager_diagnostics(norm):
  """The loop's compiled statistics are `diagnostics`' (tested there)."""
  keras.utils.set_random_seed(1)
  model = models.nin(norm, width=0.1)
  images = np.random.default_rng(0).standard_normal(
      (16, 32, 32, 3)).astype(np.float32)
  scalars, histograms = layer_stats.HiddenStats(model, images).compute()
  probe = diagnostics.probe_model(model)
  expected, _ = diagnostics.summarize(
      diagnostics.statistics(probe(images)), probe.unit_kinds)
  assert scalars.keys() == expected.keys()
  for tag, value in expected.items():
    assert scalars[tag] == pytest.approx(value, rel=1e-5, abs=1e-6), tag
  assert {'ics/mean_over_layers/gap_mean', 'ics/conv8/gap_std'} <= set(
      scalars)
  np.testing.assert_allclose(
      histograms['weights/conv1/kernel_norm'],
      diagnostics.weight_statistics(model)['weights/conv1/kernel_norm'])
  assert histograms['stats/conv3/output'].size <= 4096


def test_event_writers_describe_scalars_and_show_error_in_percent(tmp_path):
  events = summaries.EventWriters(str(tmp_path))
  events.scalars('validation', 3, {'error': 0.25, 'loss': 1.5})
  events.scalars('probe', 3, {'ics/conv1/gap_std': 0.125})
  events.close()
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  def read(run):
    acc = event_accumulator.EventAccumulator(str(tmp_path / run))
    acc.Reload()
    return acc
  validation = read('validation')
  assert tf.make_ndarray(validation.Tensors('error')[0].tensor_proto) == 25.0
  assert 'percent' in validation.SummaryMetadata('error').summary_description
  assert tf.make_ndarray(validation.Tensors('loss')[0].tensor_proto) == 1.5
  # The records' split 'probe' is shown in the train run.
  assert not (tmp_path / 'probe').exists()
  assert read('train').Tensors('ics/conv1/gap_std')[0].step == 3


def test_histograms_are_the_events_tf_summary_histogram_writes(tmp_path):
  """One raw write of NumPy-bucketed protos: bitwise TF's own histograms."""
  rng = np.random.default_rng(0)
  values = {'stats/conv1/output': rng.standard_normal(4096).astype(np.float32),
            'weights/conv1/kernel_norm': rng.random(96),
            'weights/conv1/scale': np.full(8, 1.21, np.float32),  # One value.
            'stats/conv2/output': np.zeros(0, np.float32)}
  events = summaries.EventWriters(str(tmp_path / 'ours'))
  for step in (0, 10):
    events.histograms('probe', step, values)
  events.close()
  with tf.summary.create_file_writer(str(tmp_path / 'tf')).as_default():
    for step in (0, 10):
      for tag, value in values.items():
        tf.summary.histogram(tag, value, step=step,
                             description=tags.describe(tag))
  ours, theirs = _events(tmp_path / 'ours' / 'train'), _events(tmp_path / 'tf')
  assert sorted(ours.Tags()['tensors']) == sorted(values)
  for tag in values:
    assert [e.step for e in ours.Tensors(tag)] == [0, 10]
    for a, b in zip(ours.Tensors(tag), theirs.Tensors(tag)):
      assert a.tensor_proto == b.tensor_proto, tag
    assert ours.SummaryMetadata(tag) == theirs.SummaryMetadata(tag), tag


def _events(path):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(str(path), {'tensors': 0})
  acc.Reload()
  return acc


def test_step_decay_boundaries_are_fractions_of_training():
  schedule = builders.learning_rate_schedule(
      cfg.ScheduleConfig('step', (0.5, 0.75), 0.1), 0.05, 100)
  values = [float(schedule(s)) for s in (0, 50, 51, 75, 76, 99)]
  np.testing.assert_allclose(values, [0.05, 0.05, 0.005, 0.005, 5e-4, 5e-4],
                             rtol=1e-6)
  assert builders.learning_rate_schedule(
      cfg.ScheduleConfig('constant', (0.5,), 0.1), 0.05, 100) == 0.05


def test_weight_decay_spares_scales_and_shifts():
  model = models.nin('normprop', width=0.1)
  opt = builders.build_optimizer(
      cfg.OptimizerConfig(learning_rate=0.1, momentum=0.0, weight_decay=0.5,
                          weight_decay_exclude=('gamma', 'beta', 'bias', 'g')),
      cfg.ScheduleConfig(kind='constant'), 100, 'float32')
  opt.build(model.trainable_variables)
  before = {v.path: v.numpy().copy() for v in model.trainable_variables}
  opt.apply_gradients([(tf.zeros_like(v), v)
                       for v in model.trainable_variables])
  for v in model.trainable_variables:
    ratio = 1.0 if v.name in ('gamma', 'beta') else 1 - 0.1 * 0.5
    np.testing.assert_allclose(v.numpy(), before[v.path] * ratio, rtol=1e-6,
                               err_msg=v.path)


def _run(model_dir, data_dir, *bindings, build_only=False):
  """Trains (or only builds) with the bindings, on the prepared subset."""
  gin.clear_config()
  gin_config.parse([], [f"dataset.data_dir = '{data_dir}'", 'nin.width = 0.05',
                        f'dataset.validation_size = {VALIDATION_SIZE}',
                        *bindings])
  strategy = tf.distribute.get_strategy()
  if not build_only:
    return experiment.run(str(model_dir), strategy)
  previous = keras.config.dtype_policy()
  try:
    return experiment.build(str(model_dir), strategy)
  finally:
    keras.config.set_dtype_policy(previous)


def test_mixed_float16_and_multi_step_loops(prepared, tmp_path):
  """Loss scaling works, and loops of 4 steps stop at every boundary."""
  data_dir, _ = prepared
  settings = ('trainer.train_steps = 7',
              'train/input_pipeline.global_batch_size = 10',
              "experiment.precision_policy = 'mixed_float16'")
  summary = _run(
      tmp_path / 'run', data_dir, *settings,
      'eval/input_pipeline.global_batch_size = 50',
      'hidden_stats.probe_batch_size = 8', 'hidden_stats.every_steps = 2',
      'trainer.log_every_steps = 3', 'trainer.eval_every_steps = 0',
      'trainer.steps_per_loop = 4')
  assert summary['steps'] == 7 and summary['precision_policy'] == (
      'mixed_float16')
  assert keras.config.dtype_policy().name == 'float32'  # Restored.
  rows = records.read_jsonl(str(tmp_path / 'run' / records.METRICS_FILE))
  steps = lambda split: sorted({r['step'] for r in rows
                                if r['split'] == split})
  assert steps('train') == [3, 6, 7]
  assert steps('probe') == [0, 2, 4, 6, 7]
  assert steps('validation') == [7]
  built = _run(tmp_path / 'run', data_dir, *settings, build_only=True)
  assert isinstance(built.optimizer, keras.optimizers.LossScaleOptimizer)
  assert built.start_step == 7  # Restored from the finished run.


def test_eval_test_records_the_test_split_at_every_evaluation(prepared,
                                                             tmp_path):
  """Test error per evaluation, with the final one reused, not recomputed."""
  data_dir, _ = prepared
  summary = _run(
      tmp_path / 'run', data_dir, 'trainer.train_steps = 6',
      'train/input_pipeline.global_batch_size = 10',
      'eval/input_pipeline.global_batch_size = 50',
      'hidden_stats.every_steps = 0', 'trainer.eval_every_steps = 3',
      'trainer.eval_test = True')
  rows = records.read_jsonl(str(tmp_path / 'run' / records.METRICS_FILE))
  errors_at = lambda split: [(r['step'], r['value']) for r in rows
                             if r['split'] == split and r['metric'] == 'error']
  assert [step for step, _ in errors_at('validation')] == [3, 6]
  assert [step for step, _ in errors_at('test')] == [3, 6]
  assert summary['final_test_error'] == errors_at('test')[-1][1]


def test_bad_knob_values_are_config_errors(prepared, tmp_path):
  data_dir, _ = prepared
  with pytest.raises(checks.ArgumentError, match='Received: norm='):
    _run(tmp_path, data_dir, "nin.norm = 'layernorm'", 'trainer.epochs = 1')
  with pytest.raises(checks.ArgumentError, match='train_steps'):
    _run(tmp_path, data_dir, 'trainer.epochs = 1', 'trainer.train_steps = 5')
  with pytest.raises(checks.ArgumentError, match='global_batch_size'):
    _run(tmp_path, data_dir, 'trainer.epochs = 1',
         'train/input_pipeline.global_batch_size = 100000')


def test_strategy_names():
  assert strategies.create_strategy('default') is tf.distribute.get_strategy()
  assert strategies.is_chief(tf.distribute.get_strategy())
  with pytest.raises(errors.StrategyError, match="Unknown strategy 'gpu'"):
    strategies.create_strategy('gpu')


def test_multi_worker_needs_tf_config(monkeypatch):
  monkeypatch.delenv('TF_CONFIG', raising=False)
  with pytest.raises(errors.StrategyError, match='TF_CONFIG'):
    strategies.create_strategy('multi_worker')


def test_global_batch_must_split_over_replicas():
  class TwoReplicas:
    num_replicas_in_sync = 2
  with pytest.raises(ValueError, match='global_batch_size=25'):
    strategies.check_global_batch(TwoReplicas(), 25, True)
  strategies.check_global_batch(TwoReplicas(), 26, True)


def test_records_past_the_checkpoint_are_dropped_on_resume(tmp_path):
  recorder = records.Recorder(str(tmp_path), seed=3, config='c')
  for step in (10, 20, 30):
    recorder.scalars('train', step, step / 10, {'loss': 1.0 / step})
  recorder.flush()
  recorder.truncate_after(20)
  rows = records.read_jsonl(str(tmp_path / records.METRICS_FILE))
  assert [r['step'] for r in rows] == [10, 20]
  assert rows[0] == {'step': 10, 'epoch': 1.0, 'split': 'train',
                     'metric': 'loss', 'value': 0.1, 'seed': 3, 'config': 'c'}
  recorder.close()
  json.dumps(summaries.hardware_info())  # Serializable.


def test_model_dir_must_be_writable(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  with pytest.raises(errors.ModelDirError, match='Cannot write'):
    records.prepare_model_dir(str(blocker / 'run'))


def test_durations_read_well():
  assert progress.format_duration(12.4) == '12s'
  assert progress.format_duration(245) == '4m05s'
  assert progress.format_duration(9060) == '2h31m'


def test_each_builder_works_alone_without_gin(prepared):
  """Model, input and probe builders take plain values and configs."""
  data_dir, _ = prepared
  info = {'num_classes': 10, 'image_shape': [32, 32, 3]}
  model = builders.build_model(info)  # No bindings: nin()'s defaults.
  assert models.norm_kind(model) == 'normprop'
  assert model.get_layer('conv1').filters == 192
  assert builders.model_settings()['norm'] == 'normprop'
  strategy = tf.distribute.get_strategy()
  config = cfg.InputConfig(global_batch_size=8, preprocessing='standardize')
  images, labels = next(iter(builders.build_input(
      strategy, data_dir, config, 'train', training=True, seed=0)))
  assert images.shape == (8, 32, 32, 3) and labels.shape == (8,)
  # Evaluation reads the split once, in order: every test example once.
  count = sum(int(y.shape[0]) for _, y in builders.build_input(
      strategy, data_dir, config, 'test', training=False, seed=0))
  assert count == 100
  with pytest.raises(checks.ArgumentError, match='applies to training only'):
    builders.build_input(strategy, data_dir, cfg.InputConfig(augment=True),
                         'test', training=False, seed=0)
  probe = builders.probe_images(data_dir, 'validation', 'standardize', 5)
  assert probe.shape == (5, 32, 32, 3)


@pytest.mark.parametrize('make,match', [
    (lambda: cfg.TrainerConfig(), 'must be set, not both'),
    (lambda: cfg.TrainerConfig(epochs=1, keep_checkpoints=0),
     'Received: keep_checkpoints=0'),
    (lambda: cfg.OptimizerConfig(momentum='abc'), "Received: momentum='abc'"),
    (lambda: cfg.ScheduleConfig(decay_at=0.5), 'Received: decay_at=0.5'),
    (lambda: cfg.RuntimeConfig(seed='x'), "Received: seed='x'"),
    (lambda: cfg.ProbeConfig(probe_batch_size=0),
     'Received: probe_batch_size=0'),
    (lambda: cfg.InputConfig(preprocessing='pca'),
     "Received: preprocessing='pca'"),
])
def test_components_validate_their_own_settings(make, match):
  with pytest.raises(checks.ArgumentError, match=match):
    make()


def test_hparams_lead_with_the_settings_comparisons_vary():
  """TensorBoard shows the first HParams columns until the user picks
  others, and cannot mark differing ones when each run writes its own
  config: the usually varied settings come first, in a fixed order."""
  flat = artifacts.flat_hparams({
      'data': {'name': 'cifar10'}, 'runtime': {'seed': 2},
      'model': {'width': 0.25, 'norm': 'batchnorm', 'dropout': 0.0},
      'optimizer': {'learning_rate': 0.05, 'momentum': 0.9}})
  assert list(flat) == ['model.norm', 'model.width',
                        'optimizer.learning_rate', 'runtime.seed',
                        'data.name', 'model.dropout', 'optimizer.momentum']
  assert flat['model.norm'] == 'batchnorm'
