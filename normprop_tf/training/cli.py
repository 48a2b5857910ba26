"""What `python -m normprop_tf.train` does, as a function: `train(...)`.

Parses gin, creates the strategy from the `strategy` component, writes
flags.json, runs the experiment and turns every failure a user can fix into
one printed paragraph and exit status 1 (no traceback). Anything else is a
bug and keeps its traceback.
"""

import contextlib
import errno
import os
import sys

from absl import logging
import tensorflow as tf

from normprop_tf.data import errors as data_errors
from normprop_tf.training import artifacts
from normprop_tf.training import config
from normprop_tf.training import errors
from normprop_tf.training import experiment
from normprop_tf.training import gin_config
from normprop_tf.training import preemption
from normprop_tf.training import records
from normprop_tf.training import strategies
from normprop_tf.utils import checks
from normprop_tf.utils import hardware
from normprop_tf.utils import locking

_USER_ERRORS = (errors.TrainingError, data_errors.DataError,
                checks.ArgumentError, locking.LockedError)


def _fail(message):
  logging.flush()
  print(f'normprop_tf.train: error: {message}', file=sys.stderr)
  return 1


def print_config(gin_files, gin_bindings):
  """Prints every bindable setting with its value; returns the exit status."""
  try:
    gin_config.parse(gin_files, gin_bindings)
    print(config.settings_text(config.Configs.from_gin()), end='')
  except _USER_ERRORS as e:
    return _fail(errors.user_message(e))
  return 0


def _flags(model_dir, gin_files, gin_bindings, command):
  records.write_json(os.path.join(model_dir, records.FLAGS_FILE), {
      'gin_file': list(gin_files), 'gin_bindings': list(gin_bindings),
      'model_dir': model_dir, 'cwd': os.getcwd(), 'command': command,
      'python': sys.executable, 'code_version': hardware.code_version()})


def _train(gin_files, gin_bindings, model_dir, command, watcher, state):
  gin_config.parse(gin_files, gin_bindings)
  # Created once, before any other TensorFlow op (TPUs require it).
  strategy_config = config.StrategyConfig()
  strategy = state['strategy'] = strategies.create_strategy(
      strategy_config.name, strategy_config.tpu_address)
  chief = strategies.is_chief(strategy)
  records.prepare_model_dir(model_dir)
  lock = locking.DirectoryLock(
      model_dir, 'training', hint='Wait for it to finish, or give another '
      '--model_dir.') if chief else contextlib.nullcontext()
  with lock:
    if chief:
      _flags(model_dir, gin_files, gin_bindings, command)
    experiment.run(model_dir, strategy,
                   name=gin_config.experiment_name(gin_files),
                   watcher=watcher)
    if chief:  # The run wrote it at the start too, for runs that get killed.
      artifacts.write_operative_config(model_dir)


def train(gin_files, gin_bindings, model_dir, command):
  """Runs one training command; returns the process exit status."""
  state = {'strategy': None}
  try:
    with preemption.Watcher() as watcher:
      _train(gin_files, gin_bindings, model_dir, command, watcher, state)
  except errors.PreemptedError as e:
    logging.flush()
    print(f'normprop_tf.train: {e}', file=sys.stderr)
    return preemption.EXIT_STATUS[e.signal_name]
  except _USER_ERRORS as e:
    return _fail(errors.user_message(e))
  except OSError as e:
    if e.errno != errno.ENOSPC:
      raise
    return _fail(_disk_full(e, model_dir))
  except tf.errors.OpError as e:
    failure = strategies.cluster_failure(
        e, state['strategy'], os.path.join(model_dir, 'checkpoints'))
    if failure is None:
      failure = _op_error(e, model_dir)
    if failure is None:
      raise
    return _fail(failure)
  return 0


def _first_line(error):
  text = str(error).strip()
  return text.splitlines()[0][:300] if text else type(error).__name__


def _disk_full(error, model_dir):
  return (f'The disk is full ({_first_line(error)}). The last checkpoint in '
          f'{model_dir} is intact: free some space and rerun the same '
          'command to resume.')


def _op_error(error, model_dir):
  """A one-paragraph message for TensorFlow errors a user can fix, or None."""
  text = _first_line(error)
  if isinstance(error, tf.errors.ResourceExhaustedError) or (
      'No space left' in str(error)):
    return _disk_full(error, model_dir)
  if isinstance(error, tf.errors.DataLossError):
    return (f'A data file is corrupt ({text}). Check the shards with '
            "input_pipeline.verify = 'full' (it names the file), or "
            're-prepare the data with --overwrite.')
  return None
