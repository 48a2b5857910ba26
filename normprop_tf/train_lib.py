"""The training library behind `python -m normprop_tf.train`: `run(...)`.

`run` is the one gin-configurable function. It trains a Network-in-Network
(`normprop_tf.models.nin`) with NormProp, BatchNorm, weight norm or no
normalization on a prepared CIFAR/SVHN directory, and writes into model_dir:

- TensorBoard events: `train/` and `validation/` (and `test/` at the end)
  scalars loss, accuracy, error, learning_rate, sec_per_step,
  images_per_sec; `probe/` hidden-layer statistics (`layer_stats`);
  weight-norm histograms in `train/`; the HParams entry and the operative gin
  config as text at the root.
- `metrics.jsonl` (every scalar as a tidy record) and `summary.json`
  (`records`); `operative_config.gin`.
- `checkpoints/` (`checkpointing`), and at the end `model.keras` plus a
  SavedModel in `saved_model/` (`model.export`).

Why a custom loop instead of `model.fit`: it buys exact step-level resume.
Keras 3.15's `BackupAndRestore(save_freq=N)` saves mid-epoch weights but
restores only the epoch counter, so a run killed mid-epoch replays that
epoch's first batches on top of weights that already learned from them. Here
the checkpoint holds the global step, and the input is a deterministic
function of (seed, step): one seeded, repeated pipeline whose epoch e is
shuffled by the e-th draw of the seeded shuffle, with augmentation keyed by
the batch index. A resumed run rebuilds it and skips the `step` consumed
batches, so it neither repeats nor skips a step. The same loop checks every
step's loss before anything is checkpointed, which is what lets a NaN stop
the run with the last good checkpoint intact.

Distribution (tf.distribute): the strategy comes from the entry point (or
from `strategy_name`); model, optimizer and checkpoint are created inside
`strategy.scope()`; the input comes from `distribute_datasets_from_function`
with per-replica batches. Only the chief writes files other than its
checkpoints.

Weight decay: Keras' `SGD(weight_decay=wd)` shrinks each decayed variable by
`lr * wd * w` per step, outside the momentum. A Caffe/PyTorch L2 coefficient
lambda (added to the gradient, so it goes through the momentum) corresponds
to wd ~ lambda / (1 - momentum) in steady state; tensorflow-addons' SGDW
decayed by `wd * w`, i.e. wd_keras = wd_tfa / lr. By default only kernels
decay (not gamma, beta, bias or g).
"""

import dataclasses
import math
import os
import time

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from normprop_tf import checkpointing
from normprop_tf import data_setup
from normprop_tf import errors
from normprop_tf import gin_utils
from normprop_tf import layer_stats
from normprop_tf import models
from normprop_tf import progress as progress_lib
from normprop_tf import records
from normprop_tf import strategies
from normprop_tf.data import pipeline

LR_SCHEDULES = ('constant', 'step')
PRECISION_POLICIES = ('float32', 'mixed_float16', 'mixed_bfloat16')
MODEL_FILE = 'model.keras'
SAVED_MODEL_DIR = 'saved_model'


@dataclasses.dataclass
class BuiltRun:
  """What `run(build_only=True)` returns: everything just before training."""
  strategy: tf.distribute.Strategy
  info: dict
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  train_data: object
  eval_data: object
  hidden_stats: object
  total_steps: int
  steps_per_epoch: int
  start_step: int


def _check(condition, name, value, requirement):
  if not condition:
    raise errors.ConfigError(
        f'`{name}` {requirement}. Received: {name}={value!r}')


def _is_int(value, minimum):
  return (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
          and value >= minimum)


def _learning_rate(schedule, learning_rate, total_steps, decay_at, factor):
  """A constant, or a step decay by `factor` at fractions of training."""
  if schedule == 'constant':
    return learning_rate
  boundaries = sorted({int(round(f * total_steps)) for f in decay_at})
  if not boundaries:
    return learning_rate
  values = [learning_rate * factor**i for i in range(len(boundaries) + 1)]
  return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def _optimizer(learning_rate, momentum, nesterov, weight_decay, exclude,
               precision_policy):
  optimizer = keras.optimizers.SGD(
      learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
      weight_decay=weight_decay or None)
  if weight_decay:
    # Keras 3.15's TF backend matches these patterns against the underlying
    # tf.Variable's name ('conv1_bn/gamma:0', and under MirroredStrategy
    # 'conv1_bn/gamma/replica_1:0'), not against the Keras name 'gamma'.
    optimizer.exclude_from_weight_decay(var_names=[
        rf'(^|/){name}(/replica_\d+)?(:\d+)?$' for name in exclude])
  if precision_policy == 'mixed_float16':
    # Dynamic loss scaling; bfloat16 needs none.
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def _current_lr(optimizer):
  return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _make_train_loop(strategy, model, optimizer, global_batch_size):
  """A tf.function running `num_steps` steps; returns per-step loss, correct."""

  def step_fn(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      per_example = keras.losses.sparse_categorical_crossentropy(
          labels, logits, from_logits=True)
      # Global-batch correctness: each replica divides its summed loss by the
      # *global* batch size, and the Keras optimizer all-reduces (sums) the
      # replicas' gradients (backend/tensorflow/optimizer.py,
      # `_all_reduce_sum_gradients`), so the update is the gradient of the
      # global-batch mean whatever the number of replicas. The learning rate
      # is therefore the one for the global batch.
      loss = tf.nn.compute_average_loss(
          per_example, global_batch_size=global_batch_size)
      scaled_loss = optimizer.scale_loss(loss)  # Identity unless float16.
    grads = tape.gradient(scaled_loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    correct = tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32))
    return loss, correct

  @tf.function
  def train_loop(iterator, num_steps):
    losses = tf.TensorArray(tf.float32, size=num_steps)
    corrects = tf.TensorArray(tf.float32, size=num_steps)
    for i in tf.range(num_steps):
      loss, correct = strategy.run(step_fn, args=next(iterator))
      # SUM over replicas: the losses are already divided by the global
      # batch, and `correct` counts examples.
      losses = losses.write(i, strategy.reduce('SUM', loss, axis=None))
      corrects = corrects.write(i, strategy.reduce('SUM', correct, axis=None))
    return losses.stack(), corrects.stack()

  return train_loop


def _make_eval_step(strategy, model):
  """A tf.function returning (loss sum, correct count, example count)."""

  def eval_fn(images, labels):
    logits = model(images, training=False)
    per_example = keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True)
    predictions = tf.argmax(logits, axis=-1, output_type=labels.dtype)
    return (tf.reduce_sum(per_example),
            tf.reduce_sum(tf.cast(tf.equal(predictions, labels), tf.float32)),
            tf.cast(tf.size(labels), tf.float32))

  @tf.function(reduce_retracing=True)
  def eval_step(batch):
    sums = strategy.run(eval_fn, args=batch)
    return [strategy.reduce('SUM', s, axis=None) for s in sums]

  return eval_step


def _evaluate(eval_step, dataset):
  """Exact loss/accuracy over a whole split, and its speed."""
  start = time.perf_counter()
  totals = np.zeros(3)
  batches = 0
  for batch in dataset:
    totals += np.array([float(t) for t in eval_step(batch)])
    batches += 1
  seconds = time.perf_counter() - start
  loss_sum, correct, count = totals
  count = max(count, 1.0)
  return {
      'loss': loss_sum / count,
      'accuracy': correct / count,
      'error': 1.0 - correct / count,
      'sec_per_step': seconds / max(batches, 1),
      'images_per_sec': count / max(seconds, 1e-9),
  }, seconds


def _validate(*, norm, lr_schedule, lr_decay_at, lr_decay_factor,
              precision_policy, epochs, train_steps, global_batch_size,
              learning_rate, steps_per_loop, stats_every_steps,
              log_every_steps, checkpoint_every_steps, eval_every_steps,
              data_dir):
  """Raises ConfigError naming the first bad knob of `run`."""
  _check(norm in models.NORMS, 'norm', norm, f'must be one of {models.NORMS}')
  _check(lr_schedule in LR_SCHEDULES, 'lr_schedule', lr_schedule,
         f'must be one of {LR_SCHEDULES}')
  _check(precision_policy in PRECISION_POLICIES, 'precision_policy',
         precision_policy, f'must be one of {PRECISION_POLICIES}')
  _check((epochs is None) != (train_steps is None), 'epochs', epochs,
         f'or `train_steps` (={train_steps!r}) must be set, not both (to '
         'train for steps with a config that sets epochs, add '
         '`run.epochs = None`)')
  _check(epochs is None or (isinstance(epochs, (int, float)) and epochs > 0),
         'epochs', epochs, 'must be positive')
  _check(train_steps is None or _is_int(train_steps, 1), 'train_steps',
         train_steps, 'must be a positive integer')
  _check(_is_int(global_batch_size, 1), 'global_batch_size',
         global_batch_size, 'must be a positive integer')
  _check(isinstance(learning_rate, (int, float)) and learning_rate > 0,
         'learning_rate', learning_rate, 'must be a positive number')
  _check(_is_int(steps_per_loop, 1), 'steps_per_loop', steps_per_loop,
         'must be a positive integer')
  for name, value in (('stats_every_steps', stats_every_steps),
                      ('log_every_steps', log_every_steps),
                      ('checkpoint_every_steps', checkpoint_every_steps)):
    _check(_is_int(value, 0), name, value, 'must be an integer >= 0')
  _check(eval_every_steps is None or _is_int(eval_every_steps, 0),
         'eval_every_steps', eval_every_steps,
         'must be None (once per epoch) or an integer >= 0')
  _check(data_dir, 'data_dir', data_dir,
         'must name the prepared data directory (gin: run.data_dir)')
  _check(all(0 < f < 1 for f in lr_decay_at), 'lr_decay_at', lr_decay_at,
         'must hold fractions of training in (0, 1)')
  _check(lr_decay_factor > 0, 'lr_decay_factor', lr_decay_factor,
         'must be positive')


class _Window:
  """Training metrics since the last log line.

  Timing leaves out the first call after a (re)start: it traces the step
  function and, on resume, skips the consumed input batches.
  """

  def __init__(self, global_batch_size):
    self.global_batch_size = global_batch_size
    self.loss = self.correct = self.seconds = self.timed_seconds = 0.0
    self.steps = self.timed_steps = 0

  def add(self, losses, corrects, seconds, timed):
    self.loss += float(np.sum(losses))
    self.correct += float(np.sum(corrects))
    self.steps += len(losses)
    self.seconds += seconds
    if timed:
      self.timed_steps += len(losses)
      self.timed_seconds += seconds

  def metrics(self):
    sec_per_step = (self.timed_seconds / self.timed_steps if self.timed_steps
                    else self.seconds / self.steps)
    accuracy = self.correct / (self.steps * self.global_batch_size)
    return {'loss': self.loss / self.steps, 'accuracy': accuracy,
            'error': 1.0 - accuracy, 'sec_per_step': sec_per_step,
            'images_per_sec': self.global_batch_size / sec_per_step}


def _to_boundary(step, every):
  """Steps from `step` to the next multiple of `every` (inf when off)."""
  return every - step % every if every else math.inf


def _at(step, every, total_steps):
  return step == total_steps or bool(every and step % every == 0)


def _hparam_value(value):
  if isinstance(value, (bool, int, float, str)):
    return value
  return str(value)


def _write_run_header(recorder, model_dir, experiment, step, hparams):
  """Operative config (file and text summary) and the HParams entry."""
  config_text = gin_utils.write_operative_config(model_dir)
  with recorder.writer('').as_default(step=step):
    hp.hparams_config(
        hparams=[hp.HParam(k) for k in hparams],
        metrics=[hp.Metric('error', group='validation',
                           display_name='validation error'),
                 hp.Metric('error', group='test', display_name='test error'),
                 hp.Metric('loss', group='train', display_name='train loss')])
    hp.hparams({k: _hparam_value(v) for k, v in hparams.items()},
               trial_id=experiment)
    tf.summary.text('operative_config', '```\n' + (
        config_text or '(run() called without gin)') + '\n```')


@gin.configurable(denylist=['model_dir', 'strategy', 'experiment',
                             'build_only'])
def run(model_dir, strategy=None, experiment=None, build_only=False, *,
        dataset='cifar10', data_dir=None, data_source=None,
        data_subset_per_class=None, validation_size=5000,
        preprocessing='standardize', augment=False, data_verify='full',
        norm='normprop', width=1.0, dropout=0.0, activation='relu',
        synchronized_bn=False,
        learning_rate=0.05, momentum=0.9, nesterov=False,
        lr_schedule='step', lr_decay_at=(0.5, 0.75), lr_decay_factor=0.1,
        weight_decay=0.0, weight_decay_exclude=('gamma', 'beta', 'bias', 'g'),
        epochs=None, train_steps=None, global_batch_size=50, seed=0,
        strategy_name='default', tpu_address=None, input_sharding='files',
        precision_policy='float32', steps_per_loop=1,
        eval_every_steps=None, eval_test=False, eval_batch_size=250,
        stats_every_steps=100,
        probe_batch_size=100, log_every_steps=100,
        checkpoint_every_steps=500, keep_checkpoints=3,
        deterministic_ops=False):
  """Trains, evaluates and saves one model; resumes from model_dir.

  Args:
    model_dir: run directory (local or gs://). Rerunning with the same
      model_dir resumes from its latest checkpoint.
    strategy: a `tf.distribute.Strategy` (the entry point passes the one it
      created), or None to create one from `strategy_name`.
    experiment: config name written into every record (the entry point
      passes the gin file names); default f'nin_{dataset}_{norm}'.
    build_only: prepare the data and build everything (strategy, model,
      optimizer, restored checkpoint, datasets, probe), then return a
      `BuiltRun` without training or writing records. For tests and for
      checking a config.
    dataset: 'cifar10', 'cifar100' or 'svhn'.
    data_dir: the prepared records (`python -m data_prep.prepare`).
    data_source: where to prepare them from when `data_dir` holds none:
      None (never; fail with the prepare command), 'tfds', a folder of class
      subfolders, a .tar.gz of one, or an original CIFAR python archive.
    data_subset_per_class: prepare only the first N images per class (int,
      or {split: N}); for smoke tests.
    validation_size: CIFAR validation holdout when preparing.
    preprocessing: 'standardize', 'zca', 'minibatch' or 'none'
      (`normprop_tf.data.make_dataset`).
    augment: the paper's "+aug" (pad 4, random crop, flip).
    data_verify: shard check when reading: 'full' (sha256), 'size', 'none'.
    norm: 'normprop', 'batchnorm', 'weightnorm' or 'none'.
    width: multiplies every hidden channel count of the NIN.
    dropout: rate of the NIN's two dropout layers (0: none).
    activation: hidden activation.
    synchronized_bn: BatchNorm statistics synchronized across replicas.
    learning_rate: SGD learning rate for the global batch.
    momentum: SGD momentum.
    nesterov: Nesterov momentum.
    lr_schedule: 'constant' or 'step'.
    lr_decay_at: for 'step': fractions of the total steps after which the
      learning rate is multiplied by `lr_decay_factor`.
    lr_decay_factor: the step decay's factor.
    weight_decay: Keras decoupled decay (w -= lr * weight_decay * w per
      step; see the module docstring for converting other conventions).
    weight_decay_exclude: exact variable names that do not decay.
    epochs: training length in epochs (floor(train examples / global batch)
      steps each). Exactly one of `epochs` and `train_steps` is set.
    train_steps: training length in steps.
    global_batch_size: examples per step, summed over replicas.
    seed: seeds initialization, data order, augmentation and dropout.
    strategy_name: 'default', 'mirrored', 'multi_worker' or 'tpu' (used
      when `strategy` is None; the entry point reads it from gin).
    tpu_address: for 'tpu': a Cloud TPU name, 'local' or 'grpc://host:port'.
    input_sharding: how the training input is split between the input
      pipelines (hosts) of a strategy (`pipeline.make_dataset(shard_by=)`):
      'files' (each host reads its own files; the example order depends on
      the number of hosts) or 'batches' (every host reads everything and
      keeps its slice of each global batch: the same global batches as a
      single-process run, hence the same result up to float round-off).
    precision_policy: 'float32', 'mixed_float16' (with dynamic loss
      scaling) or 'mixed_bfloat16' (TPU).
    steps_per_loop: training steps per `tf.function` call (>1 amortizes
      host overhead, e.g. on TPU). Loops end at every logging, statistics,
      evaluation and checkpoint boundary.
    eval_every_steps: evaluation cadence on the validation split; None:
      once per epoch; 0: only at the end.
    eval_test: also evaluate the test split at every evaluation, for
      test-error-against-epoch curves (Figure 3). Off by default: the test
      split is otherwise touched once, at the end, and never used for any
      decision. Costs one pass over the test split per evaluation.
    eval_batch_size: global batch size of evaluation.
    stats_every_steps: hidden-layer statistics cadence (0: off).
    probe_batch_size: images in the fixed probe batch (the first images of
      the validation split).
    log_every_steps: training scalars and progress-line cadence.
    checkpoint_every_steps: checkpoint cadence; a checkpoint is also saved
      at the end.
    keep_checkpoints: how many checkpoints to keep.
    deterministic_ops: `tf.config.experimental.enable_op_determinism()`
      (process-wide; slower; for bitwise-reproducible GPU runs).

  Returns:
    The summary dict also written to summary.json (a `BuiltRun` if
    `build_only`).

  Raises:
    ConfigError, ModelDirError, StrategyError, NonFiniteLossError and
    `normprop_tf.data.DataError`, each with a message that says the fix.
  """
  wall_start = time.monotonic()
  _validate(norm=norm, lr_schedule=lr_schedule, lr_decay_at=lr_decay_at,
            lr_decay_factor=lr_decay_factor,
            precision_policy=precision_policy, epochs=epochs,
            train_steps=train_steps, global_batch_size=global_batch_size,
            learning_rate=learning_rate, steps_per_loop=steps_per_loop,
            stats_every_steps=stats_every_steps,
            log_every_steps=log_every_steps,
            checkpoint_every_steps=checkpoint_every_steps,
            eval_every_steps=eval_every_steps, data_dir=data_dir)
  _check(input_sharding in ('files', 'batches'), 'input_sharding',
         input_sharding, "must be 'files' or 'batches'")
  experiment = experiment or f'nin_{dataset}_{norm}'

  records.prepare_model_dir(model_dir)
  if strategy is None:
    strategy = strategies.create_strategy(strategy_name, tpu_address)
  chief = strategies.is_chief(strategy)
  _, worker_id = strategies.worker_info(strategy)
  # Seeds Python, NumPy and TF (initializers, dropout, and the input
  # pipeline, whose op seeds combine with this global seed).
  keras.utils.set_random_seed(seed)
  if deterministic_ops:
    tf.config.experimental.enable_op_determinism()

  info = data_setup.ensure_prepared(
      dataset, data_dir, source=data_source,
      subset_per_class=data_subset_per_class,
      validation_size=validation_size,
      compute_zca=preprocessing == 'zca', seed=0, is_chief=chief)
  num_train = info['splits']['train']['num_examples']
  steps_per_epoch = num_train // global_batch_size
  _check(steps_per_epoch >= 1, 'global_batch_size', global_batch_size,
         f'must not exceed the {num_train} training examples of {data_dir}')
  total_steps = int(train_steps or max(1, round(epochs * steps_per_epoch)))
  if eval_every_steps is None:
    eval_every_steps = steps_per_epoch
  eval_split = 'validation' if 'validation' in info['splits'] else None
  try:  # The training input uses drop_remainder=True (`dataset_fn`).
    strategies.check_global_batch(strategy, global_batch_size, True)
  except ValueError as e:
    raise errors.ConfigError(f'{e} (gin: run.global_batch_size)') from None
  # Evaluation batches are split over the replicas too.
  replicas = strategy.num_replicas_in_sync
  _check(_is_int(eval_batch_size, 1) and eval_batch_size % replicas == 0,
         'eval_batch_size', eval_batch_size,
         f'must be a multiple of the {replicas} replicas of the '
         f'{strategies.strategy_name(strategy)!r} strategy')

  previous_policy = keras.config.dtype_policy()
  keras.config.set_dtype_policy(precision_policy)
  try:
    with strategy.scope():
      model = models.nin(
          norm=norm, num_classes=info['num_classes'], width=width,
          dropout=dropout, activation=activation,
          input_shape=tuple(info['image_shape']),
          synchronized_bn=synchronized_bn)
      schedule = _learning_rate(lr_schedule, learning_rate, total_steps,
                                lr_decay_at, lr_decay_factor)
      optimizer = _optimizer(schedule, momentum, nesterov, weight_decay,
                             weight_decay_exclude, precision_policy)
      # Creates the slots now: Keras 3.15 custom loops under a strategy fail
      # with "You must feed a value for placeholder tensor" otherwise.
      optimizer.build(model.trainable_variables)
      checkpointer = checkpointing.Checkpointer(
          model_dir, model, optimizer, is_chief=chief, worker_id=worker_id,
          max_to_keep=keep_checkpoints)
    start_step, train_seconds = checkpointer.restore()

    def dataset_fn(split, batch_size, train, skip=0):
      def fn(context):
        ds = pipeline.make_dataset(
            data_dir, split, batch_size, preprocessing=preprocessing,
            augment=augment and train, shuffle=train, seed=seed,
            drop_remainder=train, input_context=context, repeat=train,
            cache=True, dataset=dataset, verify=data_verify,
            shard_by=input_sharding if train else 'files')
        # Each step takes one per-replica batch per local replica.
        per_pipeline = (skip * context.num_replicas_in_sync //
                        context.num_input_pipelines)
        return ds.skip(per_pipeline) if per_pipeline else ds
      return fn

    train_data = strategy.distribute_datasets_from_function(
        dataset_fn('train', global_batch_size, True, start_step))
    eval_data = None
    if eval_split:
      eval_data = strategy.distribute_datasets_from_function(
          dataset_fn(eval_split, eval_batch_size, False))
    test_data = None
    if 'test' in info['splits']:
      test_data = strategy.distribute_datasets_from_function(
          dataset_fn('test', eval_batch_size, False))
    train_loop = _make_train_loop(strategy, model, optimizer,
                                  global_batch_size)
    eval_step = _make_eval_step(strategy, model)
    all_finite = tf.function(lambda: tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(v))
         for v in model.trainable_variables]))
    hidden = None
    if chief and stats_every_steps and eval_split:
      probe = pipeline.make_dataset(
          data_dir, eval_split, probe_batch_size, preprocessing=preprocessing,
          shuffle=False, repeat=False, drop_remainder=False, cache=False,
          dataset=dataset, verify='none')
      hidden = layer_stats.HiddenStats(model, next(iter(probe))[0])

    if build_only:
      return BuiltRun(strategy=strategy, info=info, model=model,
                      optimizer=optimizer, train_data=train_data,
                      eval_data=eval_data, hidden_stats=hidden,
                      total_steps=total_steps,
                      steps_per_epoch=steps_per_epoch, start_step=start_step)

    recorder = records.Recorder(model_dir, seed, experiment, enabled=chief)
    recorder.truncate_after(start_step)
    if chief:
      _write_run_header(recorder, model_dir, experiment, start_step, {
          'dataset': dataset, 'preprocessing': preprocessing,
          'augment': augment, 'norm': norm, 'width': width,
          'dropout': dropout, 'activation': activation,
          'learning_rate': learning_rate, 'momentum': momentum,
          'lr_schedule': lr_schedule, 'lr_decay_at': lr_decay_at,
          'weight_decay': weight_decay,
          'global_batch_size': global_batch_size,
          'total_steps': total_steps, 'seed': seed,
          'precision_policy': precision_policy,
          'strategy': strategies.strategy_name(strategy),
          'replicas': strategy.num_replicas_in_sync})

    progress = progress_lib.Progress(experiment, total_steps, steps_per_epoch)
    evals = [s for s in range(start_step + 1, total_steps + 1)
             if _at(s, eval_every_steps, total_steps)]
    progress.evals_left = len(evals) if eval_split else 0
    if start_step >= total_steps:
      logging.info('Checkpoint step %d >= %d training steps: nothing to '
                   'train; evaluating and saving.', start_step, total_steps)
    elif start_step:
      logging.info('Resuming at step %d of %d (epoch %.2f): skipping the %d '
                   'batches already consumed.', start_step, total_steps,
                   start_step / steps_per_epoch, start_step)
    else:
      logging.info('Training %s for %d steps (%d per epoch, global batch %d, '
                   '%d replica(s)); model_dir=%s', experiment, total_steps,
                   steps_per_epoch, global_batch_size,
                   strategy.num_replicas_in_sync, model_dir)

    def write_hidden_stats(step):
      scalars, histograms = hidden.compute()
      recorder.scalars('probe', step, step / steps_per_epoch, scalars)
      layer_stats.write_histograms(recorder.writer('probe'), step, histograms)
      layer_stats.write_histograms(recorder.writer('train'), step,
                                   layer_stats.weight_histograms(model))

    def evaluate(split, data, step):
      metrics, seconds = _evaluate(eval_step, data)
      metrics['learning_rate'] = _current_lr(optimizer)
      recorder.scalars(split, step, step / steps_per_epoch, metrics)
      logging.info('[%s] %s at step %d: loss %.4f error %.2f%% (%.1f s)',
                   experiment, split, step, metrics['loss'],
                   100 * metrics['error'], seconds)
      return metrics, seconds

    step = start_step
    if hidden is not None and step == 0:
      write_hidden_stats(0)  # The statistics at initialization.
    loop_start = time.monotonic()
    window = _Window(global_batch_size)
    last_eval = last_test = None
    iterator = iter(train_data)
    while step < total_steps:
      num_steps = int(min(steps_per_loop, total_steps - step,
                          _to_boundary(step, log_every_steps),
                          _to_boundary(step, stats_every_steps),
                          _to_boundary(step, eval_every_steps),
                          _to_boundary(step, checkpoint_every_steps)))
      chunk_start = time.perf_counter()
      losses, corrects = train_loop(iterator, tf.constant(num_steps))
      losses, corrects = losses.numpy(), corrects.numpy()
      chunk_seconds = time.perf_counter() - chunk_start
      bad = np.flatnonzero(~np.isfinite(losses))
      if bad.size:
        recorder.flush()
        raise _non_finite(f'Training loss is {losses[bad[0]]} at',
                          step + int(bad[0]) + 1, steps_per_epoch,
                          checkpointer, learning_rate)
      if step == start_step:
        logging.info('First training call (tracing%s) took %.1f s.',
                     ' and input skip' if start_step else '', chunk_seconds)
      window.add(losses, corrects, chunk_seconds, timed=step > start_step)
      step += num_steps

      if _at(step, log_every_steps, total_steps):
        metrics = window.metrics()
        metrics['learning_rate'] = _current_lr(optimizer)
        recorder.scalars('train', step, step / steps_per_epoch, metrics)
        progress.update_speed(metrics['sec_per_step'])
        progress.log(step, metrics)
        window = _Window(global_batch_size)
      if hidden is not None and _at(step, stats_every_steps, total_steps):
        write_hidden_stats(step)
      if eval_data is not None and _at(step, eval_every_steps, total_steps):
        last_eval, progress.eval_seconds = evaluate(eval_split, eval_data,
                                                    step)
        progress.evals_left -= 1
        if eval_test and test_data is not None:
          last_test, test_seconds = evaluate('test', test_data, step)
          progress.eval_seconds += test_seconds  # For the ETA.
      if _at(step, checkpoint_every_steps, total_steps):
        # A finite loss at this step says nothing about the weights it
        # produced: check them, so the last checkpoint is always a good one.
        if not bool(all_finite()):
          recorder.flush()
          raise _non_finite('Some weights are NaN or infinite after', step,
                            steps_per_epoch, checkpointer, learning_rate)
        # Records first: a kill between the two leaves records that the
        # resumed run truncates, never a checkpoint without its records.
        recorder.flush()
        checkpointer.save(step, train_seconds +
                          (time.monotonic() - loop_start))
    train_seconds += time.monotonic() - loop_start

    final = {}
    if eval_data is not None:
      final[eval_split] = last_eval or evaluate(eval_split, eval_data,
                                                step)[0]
    if test_data is not None:
      final['test'] = last_test or evaluate('test', test_data, step)[0]
    if chief:
      model.save(os.path.join(model_dir, MODEL_FILE))
      model.export(os.path.join(model_dir, SAVED_MODEL_DIR), verbose=False)
    summary = {
        'status': 'completed',
        'config': experiment,
        'seed': seed,
        'steps': step,
        'epochs': step / steps_per_epoch,
        'steps_per_epoch': steps_per_epoch,
        'global_batch_size': global_batch_size,
        'final': final,
        'final_validation_error': final.get(eval_split or '', {}).get('error'),
        'final_test_error': final.get('test', {}).get('error'),
        'best_validation_error': _best(recorder, eval_split),
        'resumed_from_step': start_step,
        'train_seconds': train_seconds,
        'wall_time_seconds': time.monotonic() - wall_start,
        'model_params': model.count_params(),
        'strategy': strategies.strategy_name(strategy),
        'precision_policy': precision_policy,
        'data_dir': data_dir,
        'dataset_fingerprint': info.get('fingerprint'),
        'hardware': records.hardware_info(strategy),
    }
    recorder.write_summary(summary)
    recorder.close()
    logging.info('[%s] done: %d steps, validation error %s, test error %s, '
                 '%s wall time. Artifacts in %s', experiment, step,
                 _percent(summary['final_validation_error']),
                 _percent(summary['final_test_error']),
                 progress_lib.format_duration(summary['wall_time_seconds']),
                 model_dir)
    return summary
  finally:
    keras.config.set_dtype_policy(previous_policy)


def _percent(value):
  return 'n/a' if value is None else f'{100 * value:.2f}%'


def _best(recorder, split):
  if not split or not recorder.enabled:
    return None
  recorder.flush()
  errors_seen = [r['value'] for r in records.read_jsonl(recorder.metrics_path)
                 if r['split'] == split and r['metric'] == 'error']
  return min(errors_seen) if errors_seen else None


def _non_finite(what, step, steps_per_epoch, checkpointer, learning_rate):
  last = checkpointer.last_saved_step
  kept = (f'The last good checkpoint (step {last}) in {checkpointer.directory}'
          ' is intact; the same command resumes from it, and diverges again '
          'unless the config changes.' if last is not None else
          'No checkpoint had been written yet.')
  return errors.NonFiniteLossError(
      f'{what} step {step} (epoch '
      f'{step / steps_per_epoch:.2f}). Training stopped without saving. '
      f'{kept} Try a smaller learning rate (now run.learning_rate='
      f'{learning_rate}); NormProp\'s stable range must be measured '
      '(SPEC.md section 7).', step=step, checkpoint_step=last)
