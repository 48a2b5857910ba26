r"""Trains a NIN from gin configs; the same command again resumes the run.

    python -m normprop_tf.train --gin_file=gin/nin_cifar10.gin \
        --model_dir=runs/nin_cifar10 [--gin_bindings='nin.width = 0.5']

`gin/` holds one file per experiment of the paper. To see every setting
one can bind, with the value a config gives it:

    python -m normprop_tf.train --gin_file=gin/smoke.gin --print_config

(docs/configuration.md says what each means). This binary parses the
configs (unknown names are errors), creates the tf.distribute strategy
once, hands over to `normprop_tf.training.experiment.run`, and saves the
operative config. Failures a user can fix end with a one-paragraph message
and exit status 1, with the checkpoints written so far intact. The console
shows the project's own lines, warnings and errors; --verbosity=1 adds
TensorFlow's.
"""

import shlex
import sys

from absl import app
from absl import flags

from normprop_tf.utils import console

_GIN_FILE = flags.DEFINE_multi_string(
    'gin_file', [], 'Gin config file(s), e.g. gin/nin_cifar10.gin. Local or '
    'gs://; `include` paths resolve against gin/ and the file\'s directory.')
_GIN_BINDINGS = flags.DEFINE_multi_string(
    'gin_bindings', [], "Extra bindings, e.g. --gin_bindings='nin.width = 0.5'"
    '. Applied after the files.')
_MODEL_DIR = flags.DEFINE_string(
    'model_dir', None, 'Run directory: checkpoints, events, records and the '
    'final model. The same model_dir resumes. Required to train.')
_PRINT_CONFIG = flags.DEFINE_bool(
    'print_config', False, 'Print every setting one can bind (nin.*, '
    'optimizer.*, trainer.*, ...) with its value under the given gin files '
    'and bindings, then exit without training.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  console.configure(flags.FLAGS.verbosity)
  from normprop_tf.training import cli  # pylint: disable=g-import-not-at-top
  if _PRINT_CONFIG.value:
    sys.exit(cli.print_config(_GIN_FILE.value, _GIN_BINDINGS.value))
  command = shlex.join(['python', '-m', 'normprop_tf.train'] + sys.argv[1:])
  sys.exit(cli.train(_GIN_FILE.value, _GIN_BINDINGS.value, _MODEL_DIR.value,
                     command))


if __name__ == '__main__':
  app.run(main)
