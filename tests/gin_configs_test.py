"""Every shipped gin file parses strictly and builds its model and dataset.

Each experiment file is parsed with `skip_unknown=False` (as the binary
does), then `experiment.build` builds everything the real run builds (data
check, strategy, model, optimizer, checkpoint, datasets, probe)
with tiny overrides: width 0.05, a small prepared subset of the real CIFAR-10
copy (tests/data_fixtures.py), batch <= 10. The test then checks that the
paper-critical values in the file reach the built objects. SVHN and CIFAR-100
files run on the CIFAR-10 subset (the dataset name is overridden, the rest of
the file is kept): no copy of those datasets exists on this machine.
"""

import dataclasses
import os
import pathlib
import re

import gin
import keras
import pytest
import tensorflow as tf

from normprop_tf import models
from normprop_tf.data import stats as stats_lib
from normprop_tf.training import errors
from normprop_tf.training import experiment
from normprop_tf.training import gin_config as gin_utils

from tests.data_fixtures import VALIDATION_SIZE

pytest_plugins = ("tests.data_fixtures",)

ROOT = pathlib.Path(__file__).resolve().parents[1]
GIN = ROOT / 'gin'
EXPERIMENTS = sorted(p for p in GIN.rglob('*.gin')
                     if 'base' not in p.relative_to(GIN).parts)
ALL_FILES = sorted(GIN.rglob('*.gin'))
# Counterparts: (NormProp file, other file); they may differ only in the
# normalization settings.
COUNTERPARTS = [
    ('nin_cifar10', 'nin_cifar10_batchnorm'),
    ('nin_cifar10_aug', 'nin_cifar10_batchnorm_aug'),
    ('nin_cifar100', 'nin_cifar100_batchnorm'),
    ('nin_cifar100_aug', 'nin_cifar100_batchnorm_aug'),
    ('nin_svhn', 'nin_svhn_batchnorm'),
    ('nin_cifar10_batch1', 'nin_cifar10_batchnorm_batch1'),
    ('nin_cifar10', 'nin_cifar10_weightnorm'),
    ('nin_cifar10', 'nin_cifar10_plain'),
    # gin/reduced (the reduced-scale protocol, reports/PROTOCOL.md).
    ('reduced/convergence_normprop', 'reduced/convergence_batchnorm'),
    ('reduced/convergence_normprop', 'reduced/convergence_weightnorm'),
    ('reduced/convergence_normprop', 'reduced/convergence_plain'),
    ('reduced/aug_normprop', 'reduced/aug_batchnorm'),
    ('reduced/ics_normprop', 'reduced/ics_batchnorm'),
    ('reduced/batch1_normprop', 'reduced/batch1_batchnorm'),
    ('reduced/batch50_normprop', 'reduced/batch50_batchnorm'),
    ('reduced/lr_sweep_normprop', 'reduced/lr_sweep_batchnorm'),
    # The study of what separates NormProp from BN.
    ('reduced/study_long_normprop', 'reduced/study_long_batchnorm'),
    ('reduced/input_standardize', 'reduced/study_standardize_batchnorm'),
    ('reduced/study_zca_exact_normprop', 'reduced/study_zca_exact_batchnorm'),
    ('reduced/study_lr_normprop', 'reduced/study_lr_batchnorm'),
]
NORM_SETTINGS = ('nin.norm', 'nin.synchronized_bn')
REQUIRED = ['nin_cifar10', 'nin_cifar10_batchnorm', 'nin_cifar10_aug',
            'nin_cifar10_batchnorm_aug', 'nin_cifar100',
            'nin_cifar100_batchnorm', 'nin_cifar100_aug',
            'nin_cifar100_batchnorm_aug', 'nin_svhn', 'nin_svhn_batchnorm',
            'nin_cifar10_batch1', 'nin_cifar10_batchnorm_batch1',
            'nin_cifar10_weightnorm', 'nin_cifar10_plain', 'smoke']


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _bindings(path):
  """{'nin.width': value-string} of everything a file binds (after includes)."""
  gin.clear_config()
  gin_utils.parse([str(path)])
  lines = [l for l in gin.config_str().splitlines()
           if l and not l.startswith('#')]
  gin.clear_config()
  return dict(l.split(' = ', 1) for l in lines)


def test_every_required_experiment_file_exists():
  names = {p.stem for p in EXPERIMENTS}
  assert not set(REQUIRED) - names, set(REQUIRED) - names


@pytest.mark.parametrize('path', ALL_FILES, ids=lambda p: str(
    p.relative_to(GIN)))
def test_parses_strictly(path):
  gin_utils.parse([str(path)])
  assert gin.config_str()


@pytest.mark.parametrize('path', EXPERIMENTS, ids=lambda p: p.stem)
def test_header_names_result_and_exact_command(path):
  text = path.read_text()
  header = text.split('\n\n', 1)[0]
  assert header.startswith('# '), 'the header comes first'
  rel = path.relative_to(ROOT).as_posix()
  # Bindings may sit between the file and the model_dir (gin/reduced runs
  # bind the seed or the swept learning rate).
  assert re.search(
      rf"python -m normprop_tf\.train --gin_file={re.escape(rel)}"
      r"""( --gin_bindings=('[^']*'|"[^"]*"))* --model_dir=""", header), header
  if path.stem != 'smoke':
    assert "Paper's number:" in header, header
    assert re.search(r'Table 1|Figure \d|docs/method.md', header), header


def test_every_unconfirmed_base_setting_is_marked():
  text = (GIN / 'base' / 'train.gin').read_text()
  for name in ('optimizer.learning_rate', 'optimizer.momentum',
               'lr_schedule.decay_at', 'optimizer.weight_decay',
               'trainer.epochs', 'train/input_pipeline.global_batch_size',
               'nin.dropout'):
    block = text.split(f'{name} =')[0].rsplit('\n\n', 1)[-1] + (
        text.split(f'{name} =')[1].split('\n')[0])
    assert '# reconstructed:' in block, name


@pytest.mark.parametrize('normprop,other', COUNTERPARTS,
                         ids=lambda n: n)
def test_counterparts_differ_only_in_normalization(normprop, other):
  a = _bindings(GIN / f'{normprop}.gin')
  b = _bindings(GIN / f'{other}.gin')
  differing = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
  assert differing, 'the files should differ in the normalization'
  assert differing <= set(NORM_SETTINGS), differing
  assert a['nin.norm'] == "'normprop'"


@pytest.mark.parametrize('path', EXPERIMENTS, ids=lambda p: p.stem)
def test_builds_model_and_dataset(path, prepared, tmp_path):
  data_dir, _ = prepared
  bound = _bindings(path)
  batch = int(bound['train/input_pipeline.global_batch_size'])
  gin_utils.parse([str(path)], [
      "dataset.name = 'cifar10'",
      f"dataset.data_dir = '{data_dir}'",
      'dataset.source = None',
      # The fixture's preparation; an experiment's own would re-prepare.
      f'dataset.validation_size = {VALIDATION_SIZE}',
      'dataset.subset_per_class = None',
      f'dataset.zca_epsilon = {stats_lib.ZCA_EPSILON}',
      "dataset.jpeg_idct = 'accurate'",
      'nin.width = 0.05',
      f'train/input_pipeline.global_batch_size = {min(10, batch)}',
      'hidden_stats.probe_batch_size = 8',
      'eval/input_pipeline.global_batch_size = 10',
  ])
  previous = keras.config.dtype_policy()
  try:
    built = experiment.build(str(tmp_path / 'run'),
                             tf.distribute.get_strategy())
  finally:
    keras.config.set_dtype_policy(previous)
  model = built.model
  value = gin.query_parameter

  # The model is the configured NIN.
  assert models.norm_kind(model) == value('nin.norm')
  assert model.get_layer('conv1').filters == max(1, round(192 * 0.05))
  assert model.output_shape == (None, 10)
  has_dropout = any(isinstance(l, keras.layers.Dropout) for l in model.layers)
  assert has_dropout == (value('nin.dropout') > 0)
  # The optimizer is SGD with the configured momentum, learning rate and
  # schedule (the first value of a step decay is the base rate).
  sgd = built.optimizer
  assert isinstance(sgd, keras.optimizers.SGD)
  assert sgd.momentum == pytest.approx(value('optimizer.momentum'))
  assert float(sgd.learning_rate) == pytest.approx(
      value('optimizer.learning_rate'))
  train_steps = bound.get('trainer.train_steps')
  if train_steps not in (None, 'None'):
    assert built.total_steps == int(train_steps)
  else:
    assert built.total_steps == round(
        value('trainer.epochs') * built.steps_per_epoch)
  # One training batch of the configured global batch size.
  images, labels = next(iter(built.train_data))
  assert images.shape == (min(10, batch), 32, 32, 3)
  assert images.dtype == tf.float32 and labels.dtype == tf.int32
  assert built.hidden_stats is not None  # The probe batch is there too.
  assert not os.path.exists(tmp_path / 'run' / 'metrics.jsonl')


def test_unknown_binding_is_named():
  with pytest.raises(errors.ConfigError, match=r"Unknown gin binding.*widht"):
    gin_utils.parse([str(GIN / 'smoke.gin')], ['nin.widht = 0.5'])
  with pytest.raises(errors.ConfigError, match=r"Unknown gin binding.*nope"):
    gin_utils.parse([], ['nope.width = 0.5'])


@pytest.mark.parametrize('old,new', [
    ('run.width = 0.5', 'nin.width'),
    ('run.global_batch_size = 8', 'train/input_pipeline.global_batch_size'),
    ("run.strategy_name = 'mirrored'", 'strategy.name'),
    ('run.seed = 3', 'experiment.seed')])
def test_release_0_1_names_are_rejected_with_the_new_binding(old, new):
  with pytest.raises(errors.ConfigError,
                     match=rf'`run\.\w+` was renamed.*bind `{re.escape(new)}`'):
    gin_utils.parse([], [old])


def test_every_setting_is_documented_once():
  """docs/configuration.md has one table row per configurable parameter."""
  import inspect  # pylint: disable=g-import-not-at-top
  from normprop_tf.training import builders  # pylint: disable=g-import-not-at-top
  from normprop_tf.training import config as cfg  # pylint: disable=g-import-not-at-top
  doc = (ROOT / 'docs' / 'configuration.md').read_text()
  rows = re.findall(r'^\| `([\w/]+\.\w+)` \|', doc, re.M)
  expected = set()
  for name, cls in (('strategy', cfg.StrategyConfig),
                    ('experiment', cfg.RuntimeConfig),
                    ('dataset', cfg.DataConfig),
                    ('input_pipeline', cfg.InputConfig),
                    ('optimizer', cfg.OptimizerConfig),
                    ('lr_schedule', cfg.ScheduleConfig),
                    ('trainer', cfg.TrainerConfig),
                    ('hidden_stats', cfg.ProbeConfig)):
    expected |= {f'{name}.{f.name}' for f in dataclasses.fields(cls)}
  expected |= {f'nin.{p}' for p in inspect.signature(models.nin).parameters
               if p not in ('num_classes', 'input_shape', 'name')}
  assert sorted(rows) == sorted(set(rows)), 'a setting is listed twice'
  assert set(rows) == expected, (set(rows) ^ expected)
  del builders


def test_configs_are_read_through_tf_io_gfile():
  """A non-local scheme (TF's in-memory ram://) works, as gs:// does."""
  with tf.io.gfile.GFile('ram://gin_test/exp.gin', 'w') as f:
    f.write("include 'base/normprop.gin'\nnin.width = 0.25\n")
  gin_utils.parse(['ram://gin_test/exp.gin'])
  assert gin.query_parameter('nin.width') == 0.25
  assert gin.query_parameter('nin.norm') == 'normprop'


@pytest.mark.parametrize(
    'path', sorted((GIN / 'reduced').glob('*.gin')), ids=lambda p: p.stem)
def test_reduced_files_keep_the_full_experiments_learning_rate(path):
  """gin/reduced changes scale, never the optimizer of the file it reduces.

  (A batch-1 run once inherited the batch-50 rate from base/reduced.gin and
  diverged at step 16: this is the check that would have caught it.)
  """
  full = re.search(r"include '([^']+)'", path.read_text()).group(1)
  assert not full.startswith('base/'), 'include the full experiment first'
  reduced = _bindings(path)
  original = _bindings(GIN / full)
  for name in ('optimizer.learning_rate', 'optimizer.momentum',
               'train/input_pipeline.global_batch_size', 'nin.norm',
               'input_pipeline.preprocessing', 'train/input_pipeline.augment'):
    if name == 'input_pipeline.preprocessing' and path.stem.startswith(
        ('input_', 'study_standardize')):
      continue  # Experiment 4 changes exactly this.
    assert reduced[name] == original[name], (name, full)
