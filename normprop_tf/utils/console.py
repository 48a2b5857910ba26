"""A quiet console: the project's own lines, warnings and errors.

TensorFlow 2.21 prints, on every start, a C++ banner (oneDNN, CUDA stubs,
CPU instructions; twice, once per shared library that initializes absl),
an error line `failed call to cuInit` on machines without a GPU, and INFO
lines such as "Sharding callback duration" after every checkpoint.

How far this goes, and why:
- `TF_CPP_MIN_LOG_LEVEL=2` (set unless the user set it) hides the C++ INFO
  and WARNING lines logged after absl's initialization, and keeps errors.
- The banner is logged *before* absl is initialized, where TF 2.21 ignores
  `TF_CPP_MIN_LOG_LEVEL`; and the cuInit line is an error. Neither can be
  switched off from Python, so `native_noise_filtered()` captures file
  descriptor 2 while TensorFlow imports and enumerates its devices, and
  writes back every line except those listed in `NOISE`. Anything else,
  including real errors, passes through in order.
- Both come while `import normprop_tf` imports Keras (and so TensorFlow),
  before the entry point's own code runs; the package calls
  `started_by_entry_point()` around that import. It acts only when the
  process was started as `python -m normprop_tf.train` (or `train_jax`,
  `data_prep.prepare`), never for a user's `import normprop_tf`.
- TensorFlow's and Keras' Python INFO lines ("Sharding callback duration"
  after every checkpoint, SavedModel assets and renames), which they log
  through absl or their own logger, are dropped; their warnings show.
- Python logging lines get a short prefix (`HH:MM:SS`, and the level when
  it is not INFO) instead of absl's long one.
`--verbosity=1` (absl's flag) turns all of this off.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile
import time

from absl import logging as absl_logging

NOISE = tuple(re.compile(p) for p in (
    r'All log messages before absl::InitializeLog\(\) is called',
    r'oneDNN custom operations are on',
    r'cudart_stub\.cc.*Could not find cuda drivers',
    r'cpu_feature_guard\.cc',
    r'^To enable the following instructions:',
    r'failed call to cuInit',
    r'Unable to register cu(DNN|FFT|BLAS) factory',
    r'computation placer already registered',
    r'Sharding callback duration',
))


_LIBRARY_PATH = re.compile(r'[/\\](tensorflow|keras|tensorboard)[/\\]')


class _LibraryInfoFilter(logging.Filter):
  """Drops INFO lines that TensorFlow and Keras log through absl."""

  def filter(self, record):
    return (record.levelno >= logging.WARNING or
            not _LIBRARY_PATH.search(record.pathname or ''))


class _ShortFormatter(logging.Formatter):
  """'12:03:04 message', with 'WARNING: ' etc. when not INFO."""

  def format(self, record):
    stamp = time.strftime('%H:%M:%S', time.localtime(record.created))
    level = '' if record.levelno == logging.INFO else f'{record.levelname}: '
    text = f'{stamp} {level}{record.getMessage()}'
    if record.exc_info:
      text += '\n' + self.formatException(record.exc_info)
    return text


def quiet(verbosity):
  """Whether to quieten the console at absl's `verbosity` (0 by default)."""
  return verbosity < 1


def configure(verbosity):
  """Sets up the console before TensorFlow is imported.

  Args:
    verbosity: absl's --verbosity; below 1 the console is quiet.
  """
  if not quiet(verbosity):
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '0')
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  handler = absl_logging.get_absl_handler()
  handler.setFormatter(_ShortFormatter())
  # TensorFlow's Python INFO lines (checkpoint sharding, SavedModel assets,
  # function renames) say nothing a user acts on; warnings still show.
  handler.addFilter(_LibraryInfoFilter())
  logging.getLogger('tensorflow').setLevel(logging.WARNING)


ENTRY_POINTS = ('normprop_tf.train', 'normprop_tf.train_jax',
                'data_prep.prepare')


def _argv_verbosity(argv):
  """absl's --verbosity/-v/--v as given on the command line (0 if absent)."""
  for i, arg in enumerate(argv):
    for name in ('--verbosity', '--v', '-v'):
      if arg == name and i + 1 < len(argv):
        value = argv[i + 1]
      elif arg.startswith(name + '='):
        value = arg[len(name) + 1:]
      else:
        continue
      try:
        return int(value)
      except ValueError:
        return 0
  return 0


def started_by_entry_point():
  """A filter for the package's own import: active only for our commands.

  `sys.orig_argv` is the interpreter's command line, so this is true only
  for `python -m <one of ENTRY_POINTS>` without --verbosity>=1.
  """
  argv = list(getattr(sys, 'orig_argv', []))
  entry = (len(argv) > 2 and argv[1] == '-m' and argv[2] in ENTRY_POINTS)
  if not entry:
    return native_noise_filtered(False)
  verbosity = _argv_verbosity(argv[3:])
  # TensorFlow reads it once, when it is imported: set it before.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2' if quiet(verbosity)
                        else '0')
  return _filtered_with_devices(quiet(verbosity))


@contextlib.contextmanager
def _filtered_with_devices(enabled):
  """The filter, also over TensorFlow's first look for GPUs (cuInit).

  Without it, the cuInit line comes as soon as absl's app.run starts.
  Listing physical devices does not initialize the runtime, so a strategy
  (a TPU's included) can still be created first.
  """
  with native_noise_filtered(enabled):
    yield
    tf = sys.modules.get('tensorflow')
    if enabled and tf is not None:
      tf.config.list_physical_devices()


def is_noise(line):
  return any(p.search(line) for p in NOISE)


@contextlib.contextmanager
def native_noise_filtered(enabled=True):
  """Drops `NOISE` lines written to file descriptor 2 inside the block.

  Everything else written there (by C++ or Python) is written back, in
  order, when the block ends, also when it raises.
  """
  if not enabled:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode='w+b') as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode('utf-8', 'replace')
      kept = [line for line in text.splitlines(keepends=True)
              if not is_noise(line)]
      sys.stderr.write(''.join(kept))
      sys.stderr.flush()
