"""Parsing the gin configs of `gin/`, strictly.

- Unknown configurables and parameters are errors (`skip_unknown=False`), so
  a typo in a file or a `--gin_bindings` flag stops the run and is named.
- `tf.io.gfile` is registered as a file reader, so `gs://` configs work.
  (`import gin.tf` would do this, but crashes on TF >= 2.16; see STACK.md.)
- `include` statements are resolved against the directory of each config
  file and against this repository's `gin/` directory, so experiment files
  can `include 'base/train.gin'` from any working directory.
"""

import contextlib
import logging
import os

import gin
import tensorflow as tf

from normprop_tf import errors

# The repository's gin/ directory (next to the installed package).
GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'gin')


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


def parse(gin_files=(), bindings=(), finalize=False):
  """Parses config files, then bindings, rejecting unknown names.

  The configurables must already be registered: import
  `normprop_tf.train_lib` first.

  Raises:
    ConfigError: a file cannot be read, a binding names an unknown
      configurable or parameter, or the syntax is wrong. The message names
      the file, line and binding.
  """
  gin.config.register_file_reader(tf.io.gfile.GFile, tf.io.gfile.exists)
  for path in gin_files:
    _add_search_path(os.path.dirname(path))
  _add_search_path(GIN_DIR)
  source = 'reading the gin config'
  try:
    with _quiet_resource_reader():
      for path in gin_files:
        source = f'gin file {path}'
        gin.parse_config_file(path, skip_unknown=False)
      source = '--gin_bindings'
      gin.parse_config(list(bindings), skip_unknown=False)
      if finalize:
        gin.finalize()
  except (ValueError, IOError, SyntaxError) as e:
    text = str(e).strip()
    kind = 'Unknown gin binding' if ('No configurable matching' in text or
                                     "doesn't have a parameter" in text) else (
                                         'Bad gin config')
    hint = ('\nKnown settings are the arguments of normprop_tf.train_lib.run '
            '(see its docstring and gin/base/*.gin).'
            if kind == 'Unknown gin binding' else '')
    raise errors.ConfigError(f'{kind} in {source}: {text}{hint}') from None
  except Exception as e:  # Tokenizer errors have no common base class.
    raise errors.ConfigError(
        f'Bad gin config in {source}: {type(e).__name__}: {e}') from None


def bound_value(name, default=None):
  """The value bound to `name` ('run.strategy_name'), else `default`."""
  try:
    return gin.query_parameter(name)
  except ValueError:
    return default


def experiment_name(gin_files):
  """'nin_cifar10' for gin/nin_cifar10.gin; '+'-joined for several files."""
  stems = [os.path.splitext(os.path.basename(p))[0] for p in gin_files]
  return '+'.join(stems) or 'run'


def write_operative_config(model_dir, filename='operative_config.gin'):
  """Writes `gin.operative_config_str()` beside the events; returns it."""
  text = gin.operative_config_str()
  path = os.path.join(model_dir, filename)
  with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
    f.write(text)
  tf.io.gfile.rename(path + '.tmp', path, overwrite=True)
  return text
