"""Every shipped gin file parses strictly and builds its model and dataset.

Each experiment file is parsed with `skip_unknown=False` (as the binary
does), then `train_lib.run(build_only=True)` builds everything the real run
builds (data check, strategy, model, optimizer, checkpoint, datasets, probe)
with tiny overrides: width 0.05, a small prepared subset of the real CIFAR-10
copy (tests/data_fixtures.py), batch <= 10. The test then checks that the
paper-critical values in the file reach the built objects. SVHN and CIFAR-100
files run on the CIFAR-10 subset (the dataset name is overridden, the rest of
the file is kept): no copy of those datasets exists on this machine.
"""

import os
import pathlib
import re

import gin
import keras
import pytest
import tensorflow as tf

from normprop_tf import errors
from normprop_tf import gin_utils
from normprop_tf import models
from normprop_tf import train_lib

pytest_plugins = ('tests.data_fixtures',)

ROOT = pathlib.Path(__file__).resolve().parents[1]
GIN = ROOT / 'gin'
EXPERIMENTS = sorted(p for p in GIN.rglob('*.gin')
                     if 'base' not in p.relative_to(GIN).parts)
ALL_FILES = sorted(GIN.rglob('*.gin'))
# Counterparts: (NormProp file, other file); they may differ only in the
# normalization settings.
COUNTERPARTS = [
    ('nin_cifar10', 'nin_cifar10_bn'),
    ('nin_cifar10_aug', 'nin_cifar10_bn_aug'),
    ('nin_cifar100', 'nin_cifar100_bn'),
    ('nin_cifar100_aug', 'nin_cifar100_bn_aug'),
    ('nin_svhn', 'nin_svhn_bn'),
    ('nin_cifar10_batch1', 'nin_cifar10_bn_batch1'),
    ('nin_cifar10', 'nin_cifar10_wn'),
    ('nin_cifar10', 'nin_cifar10_plain'),
    # gin/reduced (issue 6's reduced-scale protocol).
    ('reduced/convergence_normprop', 'reduced/convergence_bn'),
    ('reduced/convergence_normprop', 'reduced/convergence_wn'),
    ('reduced/convergence_normprop', 'reduced/convergence_plain'),
    ('reduced/aug_normprop', 'reduced/aug_bn'),
    ('reduced/ics_normprop', 'reduced/ics_bn'),
    ('reduced/batch1_normprop', 'reduced/batch1_bn'),
    ('reduced/batch50_normprop', 'reduced/batch50_bn'),
    ('reduced/lr_sweep_normprop', 'reduced/lr_sweep_bn'),
]
NORM_SETTINGS = ('run.norm', 'run.synchronized_bn')
REQUIRED = ['nin_cifar10', 'nin_cifar10_bn', 'nin_cifar10_aug',
            'nin_cifar10_bn_aug', 'nin_cifar100', 'nin_cifar100_bn',
            'nin_cifar100_aug', 'nin_cifar100_bn_aug', 'nin_svhn',
            'nin_svhn_bn', 'nin_cifar10_batch1', 'nin_cifar10_bn_batch1',
            'nin_cifar10_wn', 'nin_cifar10_plain', 'smoke']


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _bindings(path):
  """{'run.x': value-string} of everything a file binds (after includes)."""
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
      rf"( --gin_bindings='[^']*')* --model_dir=", header), header
  if path.stem != 'smoke':
    assert "Paper's number:" in header, header
    assert re.search(r'Table 1|Figure \d|SPEC.md section 7', header), header


def test_every_unconfirmed_base_setting_is_marked():
  text = (GIN / 'base' / 'train.gin').read_text()
  for name in ('learning_rate', 'momentum', 'lr_decay_at', 'weight_decay',
               'epochs', 'global_batch_size', 'dropout'):
    block = text.split(f'run.{name} =')[0].rsplit('\n\n', 1)[-1] + (
        text.split(f'run.{name} =')[1].split('\n')[0])
    assert '# reconstructed:' in block, name


@pytest.mark.parametrize('normprop,other', COUNTERPARTS,
                         ids=lambda n: n)
def test_counterparts_differ_only_in_normalization(normprop, other):
  a = _bindings(GIN / f'{normprop}.gin')
  b = _bindings(GIN / f'{other}.gin')
  differing = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
  assert differing, 'the files should differ in the normalization'
  assert differing <= set(NORM_SETTINGS), differing
  assert a['run.norm'] == "'normprop'"


@pytest.mark.parametrize('path', EXPERIMENTS, ids=lambda p: p.stem)
def test_builds_model_and_dataset(path, prepared, tmp_path):
  data_dir, _ = prepared
  bound = _bindings(path)
  gin_utils.parse([str(path)], [
      "run.dataset = 'cifar10'",
      f"run.data_dir = '{data_dir}'",
      'run.data_source = None',
      'run.width = 0.05',
      f'run.global_batch_size = {min(10, int(bound["run.global_batch_size"]))}',
      'run.probe_batch_size = 8',
      'run.eval_batch_size = 10',
  ])
  built = train_lib.run(str(tmp_path / 'run'), build_only=True)
  model = built.model
  value = lambda k: gin.query_parameter(f'run.{k}')

  # The model is the configured NIN.
  assert models.norm_kind(model) == value('norm')
  assert model.get_layer('conv1').filters == max(1, round(192 * 0.05))
  assert model.output_shape == (None, 10)
  has_dropout = any(isinstance(l, keras.layers.Dropout) for l in model.layers)
  assert has_dropout == (value('dropout') > 0)
  # The optimizer is SGD with the configured momentum, learning rate and
  # schedule (the first value of a step decay is the base rate).
  sgd = built.optimizer
  assert isinstance(sgd, keras.optimizers.SGD)
  assert sgd.momentum == pytest.approx(value('momentum'))
  assert float(sgd.learning_rate) == pytest.approx(value('learning_rate'))
  train_steps = bound.get('run.train_steps')
  if train_steps not in (None, 'None'):
    assert built.total_steps == int(train_steps)
  else:
    assert built.total_steps == round(
        value('epochs') * built.steps_per_epoch)
  # One training batch of the configured global batch size.
  images, labels = next(iter(built.train_data))
  assert images.shape == (value('global_batch_size'), 32, 32, 3)
  assert images.dtype == tf.float32 and labels.dtype == tf.int32
  assert built.hidden_stats is not None  # The probe batch is there too.
  assert not os.path.exists(tmp_path / 'run' / 'metrics.jsonl')


def test_unknown_binding_is_named():
  with pytest.raises(errors.ConfigError, match=r"Unknown gin binding.*widht"):
    gin_utils.parse([str(GIN / 'smoke.gin')], ['run.widht = 0.5'])
  with pytest.raises(errors.ConfigError, match=r"Unknown gin binding.*nope"):
    gin_utils.parse([], ['nope.width = 0.5'])


def test_configs_are_read_through_tf_io_gfile():
  """A non-local scheme (TF's in-memory ram://) works, as gs:// does."""
  with tf.io.gfile.GFile('ram://gin_test/exp.gin', 'w') as f:
    f.write("include 'base/normprop.gin'\nrun.width = 0.25\n")
  gin_utils.parse(['ram://gin_test/exp.gin'])
  assert gin.query_parameter('run.width') == 0.25
  assert gin.query_parameter('run.norm') == 'normprop'


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
  for name in ('run.learning_rate', 'run.momentum', 'run.global_batch_size',
               'run.norm', 'run.preprocessing', 'run.augment'):
    if name == 'run.preprocessing' and path.stem.startswith('input_'):
      continue  # Experiment 4 changes exactly this.
    assert reduced[name] == original[name], (name, full)
