"""Parsing the gin configs of `gin/`, strictly.

- Unknown configurables and parameters are errors (`skip_unknown=False`), so
  a typo in a file or a `--gin_bindings` flag stops the run and is named.
- The flat `run.*` names of release 0.1 are rejected with a message that
  names the new binding (`RENAMED`).
- For a `gs://` config, `tf.io.gfile` is registered as a file reader.
  (`import gin.tf` would do this, but crashes on TF >= 2.16;
  docs/stack.md.) Local configs need no TensorFlow, so the Keras-only
  runner (`normprop_tf.fit`) parses the same files.
- `include` statements are resolved against the directory of each config
  file and against this repository's `gin/` directory, so experiment files
  can `include 'base/train.gin'` from any working directory.

The configurables are registered when `normprop_tf.training.config` is
imported, which this module does.
"""

import contextlib
import logging
import os
import re

import gin

from normprop_tf.training import config  # pylint: disable=unused-import
from normprop_tf.training import errors
from normprop_tf.utils import fileio

# The repository's gin/ directory (next to the installed package).
GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'gin')

# Release 0.1's `run.<name>` settings and the bindings that replaced them.
RENAMED = {
    'dataset': 'dataset.name', 'data_dir': 'dataset.data_dir',
    'data_source': 'dataset.source',
    'data_subset_per_class': 'dataset.subset_per_class',
    'validation_size': 'dataset.validation_size',
    'preprocessing': 'input_pipeline.preprocessing',
    'augment': 'train/input_pipeline.augment',
    'data_verify': 'input_pipeline.verify',
    'global_batch_size': 'train/input_pipeline.global_batch_size',
    'eval_batch_size': 'eval/input_pipeline.global_batch_size',
    'input_sharding': 'input_pipeline.shard_by',
    'norm': 'nin.norm', 'width': 'nin.width', 'dropout': 'nin.dropout',
    'activation': 'nin.activation', 'synchronized_bn': 'nin.synchronized_bn',
    'learning_rate': 'optimizer.learning_rate',
    'momentum': 'optimizer.momentum', 'nesterov': 'optimizer.nesterov',
    'weight_decay': 'optimizer.weight_decay',
    'weight_decay_exclude': 'optimizer.weight_decay_exclude',
    'lr_schedule': 'lr_schedule.kind', 'lr_decay_at': 'lr_schedule.decay_at',
    'lr_decay_factor': 'lr_schedule.decay_factor',
    'epochs': 'trainer.epochs', 'train_steps': 'trainer.train_steps',
    'steps_per_loop': 'trainer.steps_per_loop',
    'eval_every_steps': 'trainer.eval_every_steps',
    'eval_test': 'trainer.eval_test',
    'log_every_steps': 'trainer.log_every_steps',
    'checkpoint_every_steps': 'trainer.checkpoint_every_steps',
    'keep_checkpoints': 'trainer.keep_checkpoints',
    'stats_every_steps': 'hidden_stats.every_steps',
    'probe_batch_size': 'hidden_stats.probe_batch_size',
    'seed': 'experiment.seed', 'precision_policy': 'experiment.precision_policy',
    'deterministic_ops': 'experiment.deterministic_ops',
    'strategy_name': 'strategy.name', 'tpu_address': 'strategy.tpu_address',
}


def _add_search_path(path):
  # pylint: disable=protected-access
  if path and path not in gin.config._LOCATION_PREFIXES:
    gin.add_config_file_search_path(path)


@contextlib.contextmanager
def _quiet_resource_reader():
  """Hides gin's resource reader's 'Path not found' ERROR lines.

  gin tries every search path with every reader, and its Python-package
  reader logs an error for each miss, although the next path succeeds.
  """
  root = logging.getLogger()
  drop = lambda record: record.module != 'resource_reader'
  root.addFilter(drop)
  try:
    yield
  finally:
    root.removeFilter(drop)


def _renamed_hint(text):
  """The replacement of a release-0.1 `run.x` binding named in `text`."""
  match = re.search(r'^\s*run\.(\w+)', text, re.M)
  if not match:
    return ''
  old = match.group(1)
  new = RENAMED.get(old)
  return (f'\n`run.{old}` was renamed in release 0.2: bind `{new}` instead '
          '(docs/configuration.md lists every setting).' if new else
          f'\n`run.{old}` is not a setting; the settings are listed in '
          'docs/configuration.md.')


def _is_file(path):
  return fileio.exists(path) and not fileio.isdir(path)


def _register_remote_reader():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  gin.config.register_file_reader(tf.io.gfile.GFile, _is_file)


def parse(gin_files=(), bindings=(), finalize=False):
  """Parses config files, then bindings, rejecting unknown names.

  Raises:
    ConfigError: a file cannot be read, a binding names an unknown
      configurable or parameter, or the syntax is wrong. The message names
      the file, line and binding.
  """
  if any(fileio.is_remote(path) for path in gin_files):
    _register_remote_reader()
  for path in gin_files:
    _add_search_path(os.path.dirname(path))
  _add_search_path(GIN_DIR)
  source = 'reading the gin config'
  try:
    with _quiet_resource_reader():
      for path in gin_files:
        source = f'gin file {path}'
        if fileio.isdir(path):
          raise IOError(f'{path} is a directory, not a gin file')
        gin.parse_config_file(path, skip_unknown=False)
      source = '--gin_bindings'
      gin.parse_config(list(bindings), skip_unknown=False)
      if finalize:
        gin.finalize()
  except (ValueError, IOError, SyntaxError) as e:
    text = str(e).strip()
    unknown = ('No configurable matching' in text or
               "doesn't have a parameter" in text)
    kind = 'Unknown gin binding' if unknown else 'Bad gin config'
    hint = (_renamed_hint(text) or '\nThe settings are listed in '
            'docs/configuration.md.') if unknown else ''
    raise errors.ConfigError(f'{kind} in {source}: {text}{hint}') from None
  except Exception as e:  # Tokenizer errors have no common base class.
    raise errors.ConfigError(
        f'Bad gin config in {source}: {type(e).__name__}: {e}') from None


def experiment_name(gin_files):
  """'nin_cifar10' for gin/nin_cifar10.gin; '+'-joined for several files."""
  stems = [os.path.splitext(os.path.basename(p))[0] for p in gin_files]
  return '+'.join(stems) or 'run'
