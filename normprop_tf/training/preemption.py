"""SIGTERM and SIGINT: save a checkpoint at the current step, then stop.

SIGTERM is what a preemptible VM or a Cloud TPU maintenance event sends
before taking the machine away (usually with about 30 s of grace); SIGINT is
Ctrl-C. Inside the training loop a signal only raises a flag: the loop
finishes the step it is in, saves a checkpoint at that step and stops with
`errors.PreemptedError`, so no step is lost and the same command resumes
exactly there. Before the loop (preparing data, building), there is nothing
to save and the run stops at once.

Exit statuses (`EXIT_STATUS`): 75 for SIGTERM (EX_TEMPFAIL: "try again"),
130 for SIGINT, as shells report Ctrl-C; both differ from a failure's 1.

Under tf.distribute with several workers, the flag is all-reduced (SUM: any
worker's signal makes it positive) once per loop call, so every worker
stops after the same step and all take part in the same final save (the
idea of
`tf.distribute.experimental.PreemptionCheckpointHandler`). A second signal
while saving stops the process at once.
"""

import signal
import threading

from normprop_tf.training import errors

EXIT_STATUS = {'SIGTERM': 75, 'SIGINT': 130}
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Watcher:
  """Installs the handlers for its `with` block; `requested` says if hit."""

  def __init__(self):
    self.signal_name = None
    self.in_loop = False
    self._previous = {}

  @property
  def requested(self):
    return self.signal_name is not None

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    name = signal.Signals(signum).name
    if self.signal_name is not None or not self.in_loop:
      self.signal_name = self.signal_name or name
      raise errors.PreemptedError(
          f'stopped by {name} before training started: nothing to save. '
          'Rerun the same command to start again.', None, name)
    self.signal_name = name

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in _SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}


def stopped_message(signal_name, step, checkpoint_dir):
  return (f'stopped by {signal_name} at step {step}: checkpoint saved in '
          f'{checkpoint_dir}. Rerun the same command to resume from step '
          f'{step}.')
