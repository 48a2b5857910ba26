"""The configurable components of a training run, one gin name each.

Each dataclass below is one component; its fields are the settings a gin
file binds, under the component's gin name:

| gin name | class | what it configures |
|---|---|---|
| `strategy` | `StrategyConfig` | the tf.distribute strategy |
| `experiment` | `RuntimeConfig` | seed, precision, op determinism |
| `dataset` | `DataConfig` | which prepared data, and where it comes from |
| `input_pipeline` | `InputConfig` | batching, preprocessing, augmentation; scoped `train/` and `eval/` |
| `nin` | `normprop_tf.models.nin` | the model (`nin` below) |
| `optimizer` | `OptimizerConfig` | SGD with momentum, weight decay |
| `lr_schedule` | `ScheduleConfig` | the learning-rate schedule's shape |
| `trainer` | `TrainerConfig` | length, cadence, checkpoints |
| `hidden_stats` | `ProbeConfig` | the hidden-layer statistics probe |

`docs/configuration.md` lists every setting with its meaning, default and
where the paper or a measurement sets it. The classes validate their own
fields (`normprop_tf.utils.checks`), so a bad value fails with one line that
names the setting and the value, before anything is built.

This module imports no TensorFlow: the Keras-only runner (`normprop_tf.fit`)
parses the same gin files with it.
"""

import dataclasses
import inspect
from typing import Optional

import gin

from normprop_tf import models
from normprop_tf.data import spec
from normprop_tf.utils import checks

# `nin.norm`, `nin.width`, ...: the model's settings. The data decides the
# rest (classes, image shape). The model itself stays gin-free.
nin = gin.external_configurable(
    models.nin, name='nin', module='normprop_tf.models',
    denylist=['num_classes', 'input_shape', 'name'])



def model_settings():
  """The arguments `nin` is called with, defaults included (for records)."""
  signature = inspect.signature(models.nin)
  settings = {name: p.default for name, p in signature.parameters.items()
              if name not in ('num_classes', 'input_shape', 'name')}
  settings.update(gin.get_bindings('nin'))
  return settings


PRECISION_POLICIES = ('float32', 'mixed_float16', 'mixed_bfloat16')
LR_SCHEDULES = ('constant', 'step')
SHARD_BY = ('files', 'batches')


@gin.configurable('strategy')
@dataclasses.dataclass(frozen=True)
class StrategyConfig:
  """Which tf.distribute strategy the entry point creates.

  Attributes:
    name: 'default' (one device), 'mirrored' (all local GPUs),
      'multi_worker' (hosts from TF_CONFIG) or 'tpu'.
    tpu_address: for 'tpu': a Cloud TPU name, 'local' or 'grpc://host:port'.
  """
  name: str = 'default'
  tpu_address: Optional[str] = None


@gin.configurable('experiment')
@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
  """Process-wide settings of a run.

  Attributes:
    seed: seeds initialization, data order, augmentation and dropout.
    precision_policy: 'float32', 'mixed_float16' (dynamic loss scaling) or
      'mixed_bfloat16' (TPU).
    deterministic_ops: `tf.config.experimental.enable_op_determinism()`
      (process-wide; slower; for bitwise-reproducible GPU runs).
  """
  seed: int = 0
  precision_policy: str = 'float32'
  deterministic_ops: bool = False

  def __post_init__(self):
    checks.integer('seed', self.seed, minimum=0)
    checks.one_of('precision_policy', self.precision_policy,
                  PRECISION_POLICIES)
    checks.one_of('deterministic_ops', self.deterministic_ops, (True, False))


@gin.configurable('dataset')
@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The prepared dataset a run reads, and how to prepare it when missing.

  Attributes:
    name: 'cifar10', 'cifar100' or 'svhn'.
    data_dir: the prepared records (`python -m data_prep.prepare`).
    source: where to prepare them from when `data_dir` holds none: None
      (never; fail with the prepare command), 'tfds', a folder of class
      subfolders, a .tar.gz of one, or an original CIFAR python archive.
    subset_per_class: prepare only the first N images per class (int, or
      {split: N}); for smoke runs.
    validation_size: CIFAR validation holdout when preparing.
    zca_epsilon: added to the covariance's eigenvalues by the ZCA
      statistics when preparing: pylearn2's 0.1 leaves CIFAR far from
      white; 1e-5 whitens almost exactly. Use its own data_dir.
    jpeg_idct: how JPEG sources are decoded when preparing: 'accurate'
      (libjpeg's exact IDCT, as Pillow decodes) or 'tf_default'
      (TensorFlow's former default, a fast IDCT; the reduced-scale records
      were prepared so).
  """
  name: str = 'cifar10'
  data_dir: Optional[str] = None
  source: Optional[str] = None
  subset_per_class: Optional[object] = None
  validation_size: int = 5000
  zca_epsilon: float = 0.1
  jpeg_idct: str = 'accurate'

  def __post_init__(self):
    checks.one_of('name', self.name, tuple(spec.DATASETS))
    if not self.data_dir or not isinstance(self.data_dir, str):
      checks.fail('data_dir', self.data_dir,
                  'must name the prepared data directory (gin: '
                  'dataset.data_dir)')
    if self.source is not None and not isinstance(self.source, str):
      checks.fail('source', self.source, "must be None, 'tfds' or a path")
    checks.non_negative_int('validation_size', self.validation_size)
    checks.positive_number('zca_epsilon', self.zca_epsilon)
    checks.one_of('jpeg_idct', self.jpeg_idct, spec.JPEG_IDCT)


@gin.configurable('input_pipeline')
@dataclasses.dataclass(frozen=True)
class InputConfig:
  """The input of one use of the data, gin-scoped `train/` or `eval/`.

  Attributes:
    global_batch_size: examples per step, summed over replicas.
    preprocessing: 'standardize', 'zca', 'minibatch' or 'none'
      (`normprop_tf.data.make_dataset`); bind it unscoped, so training and
      evaluation agree.
    augment: the paper's "+aug" (pad 4, random crop, flip); training only
      (bind `train/input_pipeline.augment`).
    verify: shard check when reading: 'full' (sha256), 'size', 'none'.
    shard_by: how the training input is split between the input pipelines
      (hosts) of a strategy: 'files' (each host reads its own files; the
      example order depends on the number of hosts) or 'batches' (every host
      reads everything and keeps its slice of each global batch: the same
      global batches as a single process). Evaluation always uses 'files'.
  """
  global_batch_size: int = 50
  preprocessing: str = 'standardize'
  augment: bool = False
  verify: str = 'full'
  shard_by: str = 'files'

  def __post_init__(self):
    checks.positive_int('global_batch_size', self.global_batch_size)
    checks.one_of('preprocessing', self.preprocessing, spec.PREPROCESSINGS)
    checks.one_of('augment', self.augment, (True, False))
    checks.one_of('verify', self.verify, spec.VERIFY_LEVELS)
    checks.one_of('shard_by', self.shard_by, SHARD_BY)


@gin.configurable('optimizer')
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """SGD with momentum and Keras' decoupled weight decay.

  Attributes:
    learning_rate: SGD learning rate for the global batch (the schedule's
      initial value).
    momentum: SGD momentum.
    nesterov: Nesterov momentum.
    weight_decay: Keras decoupled decay: w -= lr * weight_decay * w per step.
      A Caffe/PyTorch L2 coefficient lambda corresponds to
      lambda / (1 - momentum) in steady state; tensorflow-addons' SGDW
      decayed by wd * w, i.e. wd_keras = wd_tfa / lr.
    weight_decay_exclude: exact variable names that do not decay.
  """
  learning_rate: float = 0.05
  momentum: float = 0.9
  nesterov: bool = False
  weight_decay: float = 0.0
  weight_decay_exclude: tuple = ('gamma', 'beta', 'bias', 'g')

  def __post_init__(self):
    checks.positive_number('learning_rate', self.learning_rate)
    checks.number('momentum', self.momentum, 0, 1, high_open=True)
    checks.one_of('nesterov', self.nesterov, (True, False))
    checks.number('weight_decay', self.weight_decay, low=0)


@gin.configurable('lr_schedule')
@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """The shape of the learning-rate schedule.

  Attributes:
    kind: 'constant' or 'step'.
    decay_at: for 'step': fractions of the total steps after which the
      learning rate is multiplied by `decay_factor`.
    decay_factor: the step decay's factor.
  """
  kind: str = 'step'
  decay_at: tuple = (0.5, 0.75)
  decay_factor: float = 0.1

  def __post_init__(self):
    checks.one_of('kind', self.kind, LR_SCHEDULES)
    checks.fractions('decay_at', self.decay_at)
    checks.positive_number('decay_factor', self.decay_factor)


@gin.configurable('trainer')
@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """How long to train, and how often to log, evaluate and checkpoint.

  Attributes:
    epochs: training length in epochs (floor(train examples / global batch)
      steps each). Exactly one of `epochs` and `train_steps` is set.
    train_steps: training length in steps.
    steps_per_loop: training steps per `tf.function` call (>1 amortizes
      host overhead, e.g. on TPU). Loops end at every logging, statistics,
      evaluation and checkpoint boundary.
    eval_every_steps: validation cadence; None: once per epoch; 0: only at
      the end.
    eval_test: also evaluate the test split at every evaluation (for
      test-error curves). Off by default: the test split is otherwise
      touched once, at the end, and never used for any decision.
    log_every_steps: training scalars and progress-line cadence.
    checkpoint_every_steps: checkpoint cadence; a checkpoint is also saved
      at the end.
    keep_checkpoints: how many checkpoints to keep.
  """
  epochs: Optional[float] = None
  train_steps: Optional[int] = None
  steps_per_loop: int = 1
  eval_every_steps: Optional[int] = None
  eval_test: bool = False
  log_every_steps: int = 100
  checkpoint_every_steps: int = 500
  keep_checkpoints: int = 3

  def __post_init__(self):
    if (self.epochs is None) == (self.train_steps is None):
      checks.fail('epochs', self.epochs,
                  f'or `train_steps` (={self.train_steps!r}) must be set, not '
                  'both (to train for steps with a config that sets epochs, '
                  'add `trainer.epochs = None`)')
    if self.epochs is not None:
      checks.positive_number('epochs', self.epochs)
    if self.train_steps is not None:
      checks.positive_int('train_steps', self.train_steps)
    checks.positive_int('steps_per_loop', self.steps_per_loop)
    if self.eval_every_steps is not None:
      checks.non_negative_int('eval_every_steps', self.eval_every_steps)
    checks.one_of('eval_test', self.eval_test, (True, False))
    checks.non_negative_int('log_every_steps', self.log_every_steps)
    checks.non_negative_int('checkpoint_every_steps',
                            self.checkpoint_every_steps)
    checks.positive_int('keep_checkpoints', self.keep_checkpoints)

  def total_steps(self, steps_per_epoch):
    return int(self.train_steps or max(1, round(self.epochs *
                                                steps_per_epoch)))


@gin.configurable('hidden_stats')
@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  """The hidden-layer statistics on a fixed probe batch (Figure 2's view).

  Attributes:
    every_steps: cadence (0: off).
    probe_batch_size: images in the probe batch (the first images of the
      validation split).
  """
  every_steps: int = 100
  probe_batch_size: int = 100

  def __post_init__(self):
    checks.non_negative_int('every_steps', self.every_steps)
    checks.positive_int('probe_batch_size', self.probe_batch_size)


def scoped(config_class, scope):
  """`config_class()` with the bindings of gin scope `scope`."""
  with gin.config_scope(scope):
    return config_class()


@dataclasses.dataclass
class Configs:
  """Every component's settings, resolved from gin (or given)."""
  runtime: RuntimeConfig
  data: DataConfig
  train_input: InputConfig
  eval_input: InputConfig
  optimizer: OptimizerConfig
  schedule: ScheduleConfig
  trainer: TrainerConfig
  probe: ProbeConfig

  @classmethod
  def from_gin(cls):
    """Every component's settings; each validated, the model's too."""
    configs = cls(runtime=RuntimeConfig(), data=DataConfig(),
                  train_input=scoped(InputConfig, 'train'),
                  eval_input=scoped(InputConfig, 'eval'),
                  optimizer=OptimizerConfig(), schedule=ScheduleConfig(),
                  trainer=TrainerConfig(), probe=ProbeConfig())
    try:
      models.check_arguments(**model_settings())
    except ValueError as e:  # Name the component, as gin does for the rest.
      raise checks.ArgumentError(f'{e} (gin: nin)') from None
    return configs


def settings_text(configs):
  """Every setting one can bind, as gin lines with the values in force.

  What `python -m normprop_tf.train --print_config` prints: the defaults
  with the given gin files and bindings applied.
  """
  components = (('strategy', StrategyConfig()), ('experiment', configs.runtime),
                ('dataset', configs.data), ('train/input_pipeline',
                                            configs.train_input),
                ('eval/input_pipeline', configs.eval_input),
                ('optimizer', configs.optimizer),
                ('lr_schedule', configs.schedule),
                ('trainer', configs.trainer),
                ('hidden_stats', configs.probe))
  lines = ['# Every setting, as bound now (docs/configuration.md says what '
           'each means).', '', '# nin: the model']
  lines += [f'nin.{k} = {v!r}' for k, v in model_settings().items()]
  for name, component in components:
    lines += ['', f'# {name}: {type(component).__doc__.splitlines()[0]}']
    lines += [f'{name}.{f.name} = {getattr(component, f.name)!r}'
              for f in dataclasses.fields(component)]
  return '\n'.join(lines) + '\n'


def run_settings(configs, info, steps_per_epoch, total_steps):
  """config.json: what defines the run, by component, with plain keys."""
  asdict = dataclasses.asdict
  return {
      'model': model_settings(),
      'optimizer': asdict(configs.optimizer),
      'lr_schedule': asdict(configs.schedule),
      'data': {**asdict(configs.data),
               'fingerprint': info.get('fingerprint'),
               'num_train': info['splits']['train']['num_examples']},
      'train_input': asdict(configs.train_input),
      'eval_input': asdict(configs.eval_input),
      'runtime': asdict(configs.runtime),
      'length': {'total_steps': total_steps,
                 'steps_per_epoch': steps_per_epoch},
  }
