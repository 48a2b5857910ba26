r"""Trains a NIN from gin configs; the same command again resumes the run.

    python -m normprop_tf.train --gin_file=gin/nin_cifar10.gin \
        --model_dir=runs/nin_cifar10 [--gin_bindings='nin.width = 0.5']

`gin/` holds one file per experiment of the paper; `docs/configuration.md`
lists every setting. This binary parses the configs (unknown names are
errors), creates the tf.distribute strategy once, hands over to
`normprop_tf.training.experiment.run`, and saves the operative config.
Failures a user can fix end with a one-paragraph message and exit status 1,
with the checkpoints written so far intact.
"""

import os
import shlex
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # Hide C++ INFO lines.

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from normprop_tf.training import cli

_GIN_FILE = flags.DEFINE_multi_string(
    'gin_file', [], 'Gin config file(s), e.g. gin/nin_cifar10.gin. Local or '
    'gs://; `include` paths resolve against gin/ and the file\'s directory.')
_GIN_BINDINGS = flags.DEFINE_multi_string(
    'gin_bindings', [], "Extra bindings, e.g. --gin_bindings='nin.width = 0.5'"
    '. Applied after the files.')
_MODEL_DIR = flags.DEFINE_string(
    'model_dir', None, 'Run directory: checkpoints, events, records and the '
    'final model. The same model_dir resumes.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  command = shlex.join(['python', '-m', 'normprop_tf.train'] + sys.argv[1:])
  sys.exit(cli.train(_GIN_FILE.value, _GIN_BINDINGS.value, _MODEL_DIR.value,
                     command))


if __name__ == '__main__':
  flags.mark_flag_as_required('model_dir')
  app.run(main)
