"""Small builders, each returning one thing: model, schedule, optimizer, input.

Each takes its component's config (`normprop_tf.training.config`) and
plain values, so it can be called and tested without the others, with or
without gin. The model builder is `normprop_tf.models.nin`, registered
with gin as `nin` in `config` (the layers and models stay gin-free); the
optimizer and its schedule are built in `optimization`, which the
Keras-only runner shares.
"""

import keras
import tensorflow as tf

from normprop_tf.data import pipeline
from normprop_tf.training import config
from normprop_tf.training import optimization
from normprop_tf.training import strategies
from normprop_tf.utils import checks

def build_model(info):
  """The configured NIN for a prepared dataset's manifest `info`."""
  return config.nin(num_classes=info['num_classes'],
                    input_shape=tuple(info['image_shape']))


model_settings = config.model_settings
learning_rate_schedule = optimization.learning_rate_schedule
build_optimizer = optimization.build_optimizer
current_learning_rate = optimization.current_learning_rate


def build_input(strategy, data_dir, input_config, split, training, seed,
                skip=0):
  """The distributed input of one split.

  Args:
    strategy: the run's strategy; each replica gets its share of
      `input_config.global_batch_size`.
    data_dir: the prepared records.
    input_config: an `InputConfig` (scope `train/` or `eval/`).
    split: 'train', 'validation' or 'test'.
    training: shuffle, repeat, drop the last partial batch and augment (if
      configured); evaluation reads the split once, in order.
    seed: the run's seed (file order, shuffle, augmentation).
    skip: global batches already consumed (on resume), skipped exactly.

  Returns:
    A `tf.distribute.DistributedDataset`.
  """
  if input_config.augment and not training:
    checks.fail('augment', True, 'applies to training only: bind '
                'train/input_pipeline.augment, not the unscoped name')

  def dataset_fn(context):
    ds = pipeline.make_dataset(
        data_dir, split, input_config.global_batch_size,
        preprocessing=input_config.preprocessing,
        augment=input_config.augment and training, training=training,
        seed=seed, input_context=context, verify=input_config.verify,
        shard_by=input_config.shard_by if training else 'files')
    # Each step takes one per-replica batch per local replica.
    per_pipeline = (skip * context.num_replicas_in_sync //
                    context.num_input_pipelines)
    return ds.skip(per_pipeline) if per_pipeline else ds

  return strategy.distribute_datasets_from_function(dataset_fn)


def probe_images(data_dir, split, preprocessing, batch_size):
  """The fixed probe batch: the first `batch_size` images of `split`."""
  probe = pipeline.make_dataset(
      data_dir, split, batch_size, preprocessing=preprocessing,
      training=False, cache=False, verify='none')
  return next(iter(probe))[0]


def check_batch_sizes(strategy, train_input, eval_input):
  """Both global batches split evenly over the strategy's replicas.

  Raises:
    ArgumentError: naming the setting, the value and the fix.
  """
  try:  # The training input uses drop_remainder=True.
    strategies.check_global_batch(strategy, train_input.global_batch_size,
                                  True)
  except ValueError as e:
    raise checks.ArgumentError(
        f'{e} (gin: train/input_pipeline.global_batch_size)') from None
  replicas = strategy.num_replicas_in_sync
  if eval_input.global_batch_size % replicas:
    checks.fail('global_batch_size', eval_input.global_batch_size,
                f'of eval/input_pipeline must be a multiple of the {replicas} '
                f'replicas of the {strategies.strategy_name(strategy)!r} '
                'strategy')


def set_precision(policy):
  """Sets the global dtype policy; returns the previous one to restore."""
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(policy)
  return previous


def seed_everything(runtime):
  """Seeds Python, NumPy, TF and Keras; optionally forces determinism."""
  keras.utils.set_random_seed(runtime.seed)
  if runtime.deterministic_ops:
    tf.config.experimental.enable_op_determinism()
