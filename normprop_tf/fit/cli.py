"""What `python -m normprop_tf.train_jax` does, as a function: `train(...)`.

Checks the Keras backend, parses gin (the same files as the TensorFlow
entry point), writes flags.json and runs `runner.run`. A failure a user can
fix is one printed paragraph and exit status 1.
"""

import importlib.abc
import os
import sys

from absl import logging
import keras

from normprop_tf.data import errors as data_errors
from normprop_tf.fit import runner
from normprop_tf.training import errors
from normprop_tf.training import gin_config
from normprop_tf.training import records
from normprop_tf.utils import checks
from normprop_tf.utils import hardware
from normprop_tf.utils import locking

_USER_ERRORS = (errors.TrainingError, data_errors.DataError,
                checks.ArgumentError, locking.LockedError)
PROGRAM = 'normprop_tf.train_jax'


class _NoTensorFlow(importlib.abc.MetaPathFinder):
  """Makes `import tensorflow` fail in this process.

  Keras imports TensorFlow opportunistically when it is installed (e.g.
  `keras.utils.set_random_seed` seeds it too). This runner promises that no
  TensorFlow is imported, on machines that have it as well.
  """

  def find_spec(self, name, path, target=None):  # pylint: disable=unused-argument
    if name.split('.')[0] == 'tensorflow':
      raise ImportError(f'{PROGRAM} runs without TensorFlow ({name})')


def block_tensorflow():
  if not any(isinstance(f, _NoTensorFlow) for f in sys.meta_path):
    sys.meta_path.insert(0, _NoTensorFlow())


def _fail(message):
  logging.flush()
  print(f'{PROGRAM}: error: {message}', file=sys.stderr)
  return 1


def train(gin_files, gin_bindings, model_dir, command, prepare_only=False):
  """Runs one training command; returns the process exit status.

  With `prepare_only`, only decodes and caches the data (before several
  runs share it).
  """
  block_tensorflow()
  backend = keras.backend.backend()
  if backend != 'jax':
    return _fail(f'Keras runs on the {backend!r} backend here; this runner '
                 f'is for JAX: run it as KERAS_BACKEND=jax python -m {PROGRAM}'
                 ' ... (python -m normprop_tf.train is the TensorFlow path).')
  try:
    gin_config.parse(gin_files, gin_bindings)
    if prepare_only:
      data = runner.prepare_data()
      print(f'{PROGRAM}: {data.info["dataset"]} ready: '
            + ', '.join(f'{s} {v["num_examples"]}'
                        for s, v in data.info['splits'].items()))
      return 0
    records.prepare_model_dir(model_dir)
    with locking.DirectoryLock(model_dir, 'training (train_jax)',
                               hint='Wait for it to finish, or give another '
                               '--model_dir.'):
      records.write_json(os.path.join(model_dir, records.FLAGS_FILE), {
          'gin_file': list(gin_files), 'gin_bindings': list(gin_bindings),
          'model_dir': model_dir, 'cwd': os.getcwd(), 'command': command,
          'python': sys.executable, 'code_version': hardware.code_version(),
          'keras_backend': backend})
      runner.run(model_dir, gin_config.experiment_name(gin_files))
  except _USER_ERRORS as e:
    return _fail(errors.user_message(e))
  return 0
