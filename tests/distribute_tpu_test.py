"""TPU-specific input constraints, checked without a TPU.

A TPU compiles the training step for fixed shapes, splits the global batch
evenly over its cores and wants a per-core batch that is a multiple of 8;
it computes in bfloat16. Here:
- the training input has fully defined batch shapes (drop_remainder=True)
  under an input context, for both `shard_by` modes, and keeps them
  through augmentation;
- `shard_by='batches'` gives every replica its slice of the very global
  batches a single pipeline makes (what makes 1- and 2-worker runs agree,
  tests/distribute_multiworker_test.py);
- `strategies.check_global_batch` rejects a global batch not divisible by
  the replica count and, on TPU, by 8 x cores, or dynamic shapes; `run`
  turns that into a ConfigError naming train/input_pipeline.global_batch_size (a stand-in
  with TPUStrategy's spec plays the TPU: `isinstance` is what the check
  uses);
- `mixed_bfloat16` is a gin setting that reaches the model, needs no loss
  scaling, and trains (on CPU).

That `strategy.name = 'tpu'` without a TPU fails fast, with exit status
1 and no traceback, is tests/train_failures_test.py
(test_tpu_requested_without_a_tpu_fails_fast).
"""

import pathlib
from unittest import mock

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from normprop_tf import data
from normprop_tf.training import experiment
from normprop_tf.training import gin_config as gin_utils
from normprop_tf.training import strategies
from normprop_tf.utils import checks

from tests.data_fixtures import fixture_bindings

pytest_plugins = ('tests.data_fixtures',)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _context(pipelines, pipeline_id, replicas):
  return tf.distribute.InputContext(num_input_pipelines=pipelines,
                                    input_pipeline_id=pipeline_id,
                                    num_replicas_in_sync=replicas)


@pytest.mark.parametrize('shard_by', ['files', 'batches'])
def test_training_batches_have_static_shapes(prepared, shard_by):
  data_dir, _ = prepared
  for augment in (False, True):
    ds = data.make_dataset(data_dir, 'train', 32, augment=augment,
                           drop_remainder=True, shard_by=shard_by,
                           input_context=_context(2, 1, 4))
    images, labels = ds.element_spec
    assert images.shape.is_fully_defined(), images
    assert images.shape.as_list() == [8, 32, 32, 3]  # 32 / 4 replicas
    assert labels.shape.as_list() == [8]
    x, y = next(iter(ds))
    assert x.shape == (8, 32, 32, 3) and y.shape == (8,)
  # What drop_remainder=True buys: without it the batch size is unknown.
  ds = data.make_dataset(data_dir, 'train', 32, drop_remainder=False,
                         input_context=_context(2, 1, 4))
  assert ds.element_spec[0].shape.as_list() == [None, 32, 32, 3]
  with pytest.raises(ValueError, match='drop_remainder=True'):
    data.make_dataset(data_dir, 'train', 32, drop_remainder=False,
                      shard_by='batches', input_context=_context(2, 1, 4))


def test_batches_sharding_slices_the_single_pipeline_batches(prepared):
  """2 pipelines x 2 local replicas: replica r gets rows [8r, 8r + 8)."""
  data_dir, _ = prepared
  kwargs = dict(augment=True, drop_remainder=True, seed=3)
  single = list(data.make_dataset(data_dir, 'train', 32, **kwargs).take(3))
  parts = [list(data.make_dataset(
      data_dir, 'train', 32, shard_by='batches',
      input_context=_context(2, i, 4), **kwargs).take(6)) for i in range(2)]
  for step, (x, y) in enumerate(single):
    # Each pipeline yields one per-replica batch per local replica, in
    # replica order: batches 2 * step and 2 * step + 1.
    replicas = [parts[p][2 * step + r] for p in range(2) for r in range(2)]
    np.testing.assert_array_equal(
        np.concatenate([r[0].numpy() for r in replicas]), x.numpy())
    np.testing.assert_array_equal(
        np.concatenate([r[1].numpy() for r in replicas]), y.numpy())


def _fake_tpu(cores):
  strategy = mock.create_autospec(tf.distribute.TPUStrategy, instance=True)
  strategy.num_replicas_in_sync = cores
  return strategy


def test_global_batch_rules():
  class TwoReplicas:
    num_replicas_in_sync = 2
  with pytest.raises(ValueError, match='divisible by the 2 replicas'):
    strategies.check_global_batch(TwoReplicas(), 25, True)
  strategies.check_global_batch(TwoReplicas(), 26, True)

  tpu = _fake_tpu(8)
  assert strategies.strategy_name(tpu) == 'tpu'
  strategies.check_global_batch(tpu, 128, True)  # 16 per core
  strategies.check_global_batch(tpu, 64, True)   # 8 per core
  with pytest.raises(ValueError, match="8 replicas of the 'tpu'"):
    strategies.check_global_batch(tpu, 50, True)  # The paper's batch.
  with pytest.raises(ValueError, match=r'divisible by 8 x 8 cores = 64'):
    strategies.check_global_batch(tpu, 72, True)  # 9 per core
  with pytest.raises(ValueError, match='static shapes'):
    strategies.check_global_batch(tpu, 64, False)


def _build(model_dir, strategy, data_dir, *bindings):
  gin.clear_config()
  gin_utils.parse([], [*fixture_bindings(data_dir), 'nin.width = 0.05',
                       'trainer.train_steps = 1', *bindings])
  previous = keras.config.dtype_policy()
  try:
    return experiment.build(str(model_dir), strategy)
  finally:
    keras.config.set_dtype_policy(previous)
    gin.clear_config()


def test_run_reports_a_bad_global_batch_as_a_config_error(prepared,
                                                          tmp_path):
  data_dir, _ = prepared
  with pytest.raises(checks.ArgumentError) as info:
    _build(tmp_path / 'run', _fake_tpu(8), data_dir,
           'train/input_pipeline.global_batch_size = 72')
  message = str(info.value)
  assert 'divisible by 8 x 8 cores = 64' in message
  assert 'global_batch_size=72' in message
  assert 'train/input_pipeline.global_batch_size' in message
  # Evaluation batches are split over the cores too.
  with pytest.raises(checks.ArgumentError, match=(
      "eval/input_pipeline must be a multiple of the 8 replicas of the 'tpu' "
      'strategy. Received: global_batch_size=250')):
    _build(tmp_path / 'run', _fake_tpu(8), data_dir,
           'train/input_pipeline.global_batch_size = 64',
           'eval/input_pipeline.global_batch_size = 250')


@pytest.fixture
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_mixed_bfloat16_is_a_gin_setting_and_trains(prepared, tmp_path,
                                                     _clean_gin):
  data_dir, _ = prepared
  gin_utils.parse([str(ROOT / 'gin' / 'smoke.gin')], [
      *fixture_bindings(data_dir), 'dataset.source = None',
      "experiment.precision_policy = 'mixed_bfloat16'", 'nin.width = 0.05',
      'trainer.epochs = None', 'trainer.train_steps = 2',
      'train/input_pipeline.global_batch_size = 16',
      'trainer.eval_every_steps = 0', 'hidden_stats.every_steps = 0'])
  strategy = tf.distribute.get_strategy()
  previous = keras.config.dtype_policy()
  try:
    built = experiment.build(str(tmp_path / 'built'), strategy)
  finally:
    keras.config.set_dtype_policy(previous)
  assert built.model.dtype_policy.name == 'mixed_bfloat16'
  assert built.model.layers[1].compute_dtype == 'bfloat16'
  # bfloat16 has float32's exponent range: no loss scaling.
  assert not isinstance(built.optimizer,
                        keras.optimizers.LossScaleOptimizer)
  assert all(v.dtype == 'float32' for v in built.model.trainable_variables)
  summary = experiment.run(str(tmp_path / 'run'), strategy)
  assert summary['precision_policy'] == 'mixed_bfloat16'
  assert summary['steps'] == 2
  assert np.isfinite(summary['final']['validation']['loss'])
  assert keras.config.dtype_policy().name == 'float32'  # Restored.
