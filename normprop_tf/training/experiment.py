"""One training run: build its parts, then hand them to the `Trainer`.

    summary = experiment.run(model_dir, strategy, name='nin_cifar10')

`build` does what Model Garden's task does before the runner takes over:
it prepares the data, seeds everything and, inside `strategy.scope()`,
builds the model, the optimizer and the checkpoint, restores the latest
checkpoint, and creates the inputs and the probe. It returns an
`Experiment` and trains nothing, so tests and `--print_config`-style checks
can inspect a config's objects. `run` builds and trains.

The components and their gin names are in `normprop_tf.training.config`.
"""

import dataclasses
import os

import gin
import keras
import tensorflow as tf

from normprop_tf.data import preparation
from normprop_tf.training import builders
from normprop_tf.training import checkpointing
from normprop_tf.training import config as cfg
from normprop_tf.training import hidden_stats as hidden_lib
from normprop_tf.training import identity
from normprop_tf.training import records
from normprop_tf.training import strategies
from normprop_tf.training import trainer as trainer_lib
from normprop_tf.utils import checks


Configs = cfg.Configs


@dataclasses.dataclass
class Experiment:
  """Everything just before training (what `build` returns)."""
  name: str
  model_dir: str
  strategy: object
  configs: Configs
  info: dict
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  checkpointer: checkpointing.Checkpointer
  start_step: int
  train_seconds: float
  steps_per_epoch: int
  total_steps: int
  train_data: object
  eval_data: object
  test_data: object
  eval_split: str
  hidden_stats: object
  settings: dict

  @property
  def is_chief(self):
    return strategies.is_chief(self.strategy)

  @property
  def run_name(self):
    """What the console and TensorBoard call the run (model_dir's name)."""
    return identity.run_name(self.model_dir)

  @property
  def trial_id(self):
    return identity.trial_id(self.model_dir, self.settings)


def _prepare_data(configs, chief):
  data = configs.data
  return preparation.ensure_prepared(
      data.name, data.data_dir, source=data.source, is_chief=chief,
      subset_per_class=data.subset_per_class,
      validation_size=data.validation_size,
      compute_zca=configs.train_input.preprocessing == 'zca', seed=0,
      zca_epsilon=data.zca_epsilon, jpeg_idct=data.jpeg_idct)


def _lengths(configs, info):
  """(steps per epoch, total steps) for the prepared training split."""
  num_train = info['splits']['train']['num_examples']
  batch = configs.train_input.global_batch_size
  if num_train // batch < 1:
    checks.fail('global_batch_size', batch,
                f'must not exceed the {num_train} training examples of '
                f'{configs.data.data_dir}')
  steps_per_epoch = num_train // batch
  return steps_per_epoch, configs.trainer.total_steps(steps_per_epoch)


def _build_state(model_dir, strategy, configs, info, total_steps):
  """Model, optimizer and checkpointer, inside the strategy's scope."""
  with strategy.scope():
    model = builders.build_model(info)
    optimizer = builders.build_optimizer(
        configs.optimizer, configs.schedule, total_steps,
        configs.runtime.precision_policy)
    # Creates the slots now: Keras 3.15 custom loops under a strategy fail
    # with "You must feed a value for placeholder tensor" otherwise.
    optimizer.build(model.trainable_variables)
    _, worker_id = strategies.worker_info(strategy)
    checkpointer = checkpointing.Checkpointer(
        model_dir, model, optimizer, is_chief=strategies.is_chief(strategy),
        worker_id=worker_id, max_to_keep=configs.trainer.keep_checkpoints)
  return model, optimizer, checkpointer


def build(model_dir, strategy, name=None, configs=None):
  """Builds everything a run needs and restores its latest checkpoint.

  Args:
    model_dir: run directory (local or gs://); it is created.
    strategy: the `tf.distribute.Strategy` the entry point created.
    name: the run's config name for records; default f'nin_{dataset}'.
    configs: a `Configs`; default: resolved from gin.

  Returns:
    An `Experiment`. The global dtype policy is set to the run's; `run`
    restores the previous one.
  """
  configs = configs or Configs.from_gin()
  records.prepare_model_dir(model_dir)
  chief = strategies.is_chief(strategy)
  builders.seed_everything(configs.runtime)
  info = _prepare_data(configs, chief)
  steps_per_epoch, total_steps = _lengths(configs, info)
  builders.check_batch_sizes(strategy, configs.train_input,
                             configs.eval_input)
  settings = cfg.run_settings(configs, info, steps_per_epoch, total_steps)
  if tf.train.latest_checkpoint(
      os.path.join(model_dir, checkpointing.CHECKPOINT_SUBDIR)):
    identity.check_resume(model_dir, settings)
  builders.set_precision(configs.runtime.precision_policy)
  model, optimizer, checkpointer = _build_state(model_dir, strategy, configs,
                                                info, total_steps)
  start_step, train_seconds = checkpointer.restore()
  data_dir, seed = configs.data.data_dir, configs.runtime.seed
  eval_split = 'validation' if 'validation' in info['splits'] else None
  def build_eval(split):
    if split not in info['splits']:
      return None
    return builders.build_input(strategy, data_dir, configs.eval_input, split,
                                False, seed)

  train_data = builders.build_input(strategy, data_dir, configs.train_input,
                                    'train', True, seed, skip=start_step)
  eval_data, test_data = build_eval(eval_split), build_eval('test')
  hidden = None
  if chief and configs.probe.every_steps and eval_split:
    hidden = hidden_lib.HiddenStats(model, builders.probe_images(
        data_dir, eval_split, configs.train_input.preprocessing,
        configs.probe.probe_batch_size))
  return Experiment(
      name=name or f'nin_{configs.data.name}', model_dir=model_dir,
      strategy=strategy, configs=configs, info=info, model=model,
      optimizer=optimizer, checkpointer=checkpointer, start_step=start_step,
      train_seconds=train_seconds, steps_per_epoch=steps_per_epoch,
      total_steps=total_steps, train_data=train_data, eval_data=eval_data,
      test_data=test_data, eval_split=eval_split, hidden_stats=hidden,
      settings=settings)


def run(model_dir, strategy, name=None, configs=None, watcher=None):
  """Builds and trains one run; returns the summary written to summary.json.

  Rerunning with the same model_dir resumes from its latest checkpoint.
  `watcher` (a `preemption.Watcher`) makes SIGTERM/SIGINT save and stop.

  Raises:
    TrainingError subclasses, `normprop_tf.data.DataError` and
    `normprop_tf.utils.checks.ArgumentError`, each with a message that says
    the fix.
  """
  previous_policy = keras.config.dtype_policy()
  try:
    experiment = build(model_dir, strategy, name, configs)
    return trainer_lib.Trainer(experiment, watcher).train()
  finally:
    keras.config.set_dtype_policy(previous_policy)


def operative_config():
  """The operative gin config (every setting the run used)."""
  return gin.operative_config_str()
