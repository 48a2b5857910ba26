r"""Trains a NIN from gin configs; the same command again resumes the run.

    python -m normprop_tf.train --gin_file=gin/nin_cifar10.gin \
        --model_dir=runs/nin_cifar10 [--gin_bindings='run.width = 0.5']

The settings are the arguments of `normprop_tf.train_lib.run`; `gin/` holds
one file per experiment of the paper. This binary parses the configs
(unknown names are errors), creates the tf.distribute strategy once (named
by `run.strategy_name`), hands over to `train_lib.run`, and saves the
operative config. Failures a user can fix end with a one-paragraph message
and exit status 1, with the checkpoints written so far intact.
"""

import os
import re
import shlex
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # Hide C++ INFO lines.

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from normprop_tf import errors
from normprop_tf import gin_utils
from normprop_tf import records
from normprop_tf import strategies
from normprop_tf import train_lib
from normprop_tf.data import errors as data_errors

_GIN_FILE = flags.DEFINE_multi_string(
    'gin_file', [], 'Gin config file(s), e.g. gin/nin_cifar10.gin. Local or '
    'gs://; `include` paths resolve against gin/ and the file\'s directory.')
_GIN_BINDINGS = flags.DEFINE_multi_string(
    'gin_bindings', [], "Extra bindings, e.g. --gin_bindings='run.width = 0.5'"
    '. Applied after the files.')
_MODEL_DIR = flags.DEFINE_string(
    'model_dir', None, 'Run directory: checkpoints, events, records and the '
    'final model. The same model_dir resumes.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  model_dir = _MODEL_DIR.value
  strategy = None
  try:
    gin_utils.parse(_GIN_FILE.value, _GIN_BINDINGS.value)
    # Created once, before any other TensorFlow op (TPUs require it).
    strategy = strategies.create_strategy(
        gin_utils.bound_value('run.strategy_name', 'default'),
        gin_utils.bound_value('run.tpu_address', None))
    chief = strategies.is_chief(strategy)
    records.prepare_model_dir(model_dir)
    if chief:
      records.write_json(os.path.join(model_dir, records.FLAGS_FILE), {
          'gin_file': _GIN_FILE.value, 'gin_bindings': _GIN_BINDINGS.value,
          'model_dir': model_dir, 'cwd': os.getcwd(),
          'command': shlex.join(['python', '-m', 'normprop_tf.train'] +
                                sys.argv[1:]),
          'python': sys.executable})
    train_lib.run(model_dir, strategy=strategy,
                  experiment=gin_utils.experiment_name(_GIN_FILE.value))
    if chief:  # run() wrote it at the start too, for runs that get killed.
      gin_utils.write_operative_config(model_dir)
  except (errors.TrainingError, data_errors.DataError) as e:
    logging.flush()
    # gin appends "In call to configurable 'run' (<function ...>)" lines.
    message = re.sub(r'\n\s*In call to configurable .*', '', str(e))
    print(f'normprop_tf.train: error: {message}', file=sys.stderr)
    sys.exit(1)
  except tf.errors.OpError as e:
    # A multi-worker peer died or hung: a clear message, not a traceback.
    failure = strategies.cluster_failure(
        e, strategy, os.path.join(model_dir, 'checkpoints'))
    if failure is None:
      raise
    logging.flush()
    print(f'normprop_tf.train: error: {failure}', file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))
    print('normprop_tf.train: interrupted. Rerun the same command to resume '
          f'from {latest or "the start (no checkpoint yet)"}.', file=sys.stderr)
    sys.exit(130)


if __name__ == '__main__':
  flags.mark_flag_as_required('model_dir')
  app.run(main)
