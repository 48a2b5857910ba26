"""User-facing training failures.

Everything the user can fix (a config typo, a missing dataset, an unwritable
model_dir, a diverged run, a TPU that is not there) raises a subclass of
`TrainingError`. The entry point `normprop_tf.train` prints its message, with
no traceback, and exits with status 1. Anything else is a bug and keeps its
traceback.
"""


import re


def user_message(error):
  """An error's text for the console: gin's call context -> the gin name.

  gin appends "In call to configurable 'optimizer' (<class ...>)" to errors
  raised inside a configurable; for a bad setting the message then ends
  with "(gin: optimizer)" instead.
  """
  text = str(error)
  match = re.search(r"\n\s*In call to configurable '([\w./]+)'", text)
  text = re.sub(r"\n\s*In call to configurable .*", '', text).strip()
  if match and isinstance(error, ValueError):
    text += f' (gin: {match.group(1)})'
  return text


class TrainingError(Exception):
  """A failure with a message that says what happened and how to fix it."""


class ConfigError(TrainingError):
  """A gin file or binding that cannot be read or names an unknown setting."""


class ModelDirError(TrainingError):
  """The model directory cannot be created or written."""


class StrategyError(TrainingError):
  """The requested tf.distribute strategy cannot be created here."""


class NonFiniteLossError(TrainingError):
  """The training loss became NaN or infinite.

  Attributes:
    step: the 1-based global step whose loss was not finite.
    checkpoint_step: the step of the last (good) checkpoint, or None.
  """

  def __init__(self, message, step, checkpoint_step):
    super().__init__(message)
    self.step = step
    self.checkpoint_step = checkpoint_step


class RunMismatchError(TrainingError):
  """A rerun into a model_dir asks for a different run than the one there."""


class PreemptedError(TrainingError):
  """SIGTERM or SIGINT stopped the run after saving a checkpoint.

  Attributes:
    step: the step of the checkpoint saved on the way out (None when the
      signal came before training started, with nothing to save).
    signal_name: 'SIGTERM' or 'SIGINT'.
  """

  def __init__(self, message, step, signal_name):
    super().__init__(message)
    self.step = step
    self.signal_name = signal_name
