"""What `python -m normprop_tf.train` does, as a function: `train(...)`.

Parses gin, creates the strategy from the `strategy` component, writes
flags.json, runs the experiment and turns every failure a user can fix into
one printed paragraph and exit status 1 (no traceback). Anything else is a
bug and keeps its traceback.
"""

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
from normprop_tf.training import records
from normprop_tf.training import strategies
from normprop_tf.utils import checks
from normprop_tf.utils import hardware

_USER_ERRORS = (errors.TrainingError, data_errors.DataError,
                checks.ArgumentError)


def _fail(message):
  logging.flush()
  print(f'normprop_tf.train: error: {message}', file=sys.stderr)
  return 1


def train(gin_files, gin_bindings, model_dir, command):
  """Runs one training command; returns the process exit status."""
  strategy = None
  try:
    gin_config.parse(gin_files, gin_bindings)
    # Created once, before any other TensorFlow op (TPUs require it).
    strategy_config = config.StrategyConfig()
    strategy = strategies.create_strategy(strategy_config.name,
                                          strategy_config.tpu_address)
    chief = strategies.is_chief(strategy)
    records.prepare_model_dir(model_dir)
    if chief:
      records.write_json(os.path.join(model_dir, records.FLAGS_FILE), {
          'gin_file': list(gin_files), 'gin_bindings': list(gin_bindings),
          'model_dir': model_dir, 'cwd': os.getcwd(), 'command': command,
          'python': sys.executable,
          'code_version': hardware.code_version()})
    experiment.run(model_dir, strategy,
                   name=gin_config.experiment_name(gin_files))
    if chief:  # The run wrote it at the start too, for runs that get killed.
      artifacts.write_operative_config(model_dir)
  except _USER_ERRORS as e:
    return _fail(errors.user_message(e))
  except tf.errors.OpError as e:
    # A multi-worker peer died or hung: a clear message, not a traceback.
    failure = strategies.cluster_failure(
        e, strategy, os.path.join(model_dir, 'checkpoints'))
    if failure is None:
      raise
    return _fail(failure)
  except KeyboardInterrupt:
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))
    print('normprop_tf.train: interrupted. Rerun the same command to resume '
          f'from {latest or "the start (no checkpoint yet)"}.', file=sys.stderr)
    return 130
  return 0
