r"""Trains a gin experiment with `model.fit` under Keras' JAX backend.

    KERAS_BACKEND=jax python -m normprop_tf.train_jax \
        --gin_file=gin/nin_cifar10.gin --model_dir=runs/jax/nin_cifar10 \
        --gin_bindings="dataset.source = 'path/to/cifar10-jpg.tar.gz'"

The same gin files and settings as `python -m normprop_tf.train`; no
TensorFlow is imported. The data comes from a local copy (a folder of class
subfolders, a .tar.gz of one, or an original CIFAR python archive), decoded
with Pillow and cached in `<dataset.data_dir>/numpy/`. This runner
restarts an unfinished model_dir from step 0 (`normprop_tf.fit.runner`).
"""

import shlex
import sys

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from normprop_tf.fit import cli

_GIN_FILE = flags.DEFINE_multi_string(
    'gin_file', [], 'Gin config file(s), e.g. gin/nin_cifar10.gin (local).')
_GIN_BINDINGS = flags.DEFINE_multi_string(
    'gin_bindings', [], "Extra bindings, e.g. --gin_bindings='nin.width = 0.5'"
    '. Applied after the files.')
_MODEL_DIR = flags.DEFINE_string(
    'model_dir', None, 'Run directory: records and the final model.')
_PREPARE_ONLY = flags.DEFINE_bool(
    'prepare_only', False, 'Only decode and cache the data in '
    '<dataset.data_dir>/numpy/ (before several runs share it); needs no '
    '--model_dir.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  command = shlex.join(['python', '-m', 'normprop_tf.train_jax'] +
                       sys.argv[1:])
  if not (_MODEL_DIR.value or _PREPARE_ONLY.value):
    raise app.UsageError('--model_dir is required (unless --prepare_only)')
  sys.exit(cli.train(_GIN_FILE.value, _GIN_BINDINGS.value, _MODEL_DIR.value,
                     command, _PREPARE_ONLY.value))


if __name__ == '__main__':
  app.run(main)
