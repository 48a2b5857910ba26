"""Readable progress lines with an ETA.

    [nin_cifar10] step 1800/45000 (epoch 2.00) loss 1.2345 error 43.10%
        lr 0.05 | 0.210 s/step 238 img/s | ETA 2h31m

s/step and img/s are those of the interval since the last line (without
the first call after a start, which traces the step function). The ETA is
the remaining steps times the recent seconds per step (an exponential moving
average over intervals), plus the remaining evaluations times the duration
of the last one.
"""

import time

from absl import logging


def format_duration(seconds):
  """'2h31m', '4m05s' or '12s'."""
  seconds = max(0, int(round(seconds)))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f'{hours}h{minutes:02d}m'
  if minutes:
    return f'{minutes}m{secs:02d}s'
  return f'{secs}s'


class Progress:
  """Tracks training speed and logs one line per call to `log`.

  Args:
    name: the experiment name shown in brackets.
    total_steps: the step the run ends at.
    steps_per_epoch: for the epoch shown.
    smoothing: weight of the newest interval in the sec/step average.
  """

  def __init__(self, name, total_steps, steps_per_epoch, smoothing=0.3):
    self.name = name
    self.total_steps = total_steps
    self.steps_per_epoch = steps_per_epoch
    self.smoothing = smoothing
    self.sec_per_step = None
    self.eval_seconds = 0.0
    self.evals_left = 0
    self.start = time.monotonic()

  def update_speed(self, sec_per_step):
    if self.sec_per_step is None:
      self.sec_per_step = sec_per_step
    else:
      self.sec_per_step += self.smoothing * (sec_per_step - self.sec_per_step)

  def eta_seconds(self, step):
    per_step = self.sec_per_step or 0.0
    return ((self.total_steps - step) * per_step +
            self.evals_left * self.eval_seconds)

  def log(self, step, metrics):
    """Logs a progress line for `step` from the interval's metrics.

    Args:
      step: the global step just reached.
      metrics: {'loss', 'error', 'learning_rate', 'sec_per_step',
        'images_per_sec'} of the interval that ended at `step`; any may be
        missing.
    """
    epoch = step / self.steps_per_epoch
    parts = [f'[{self.name}] step {step}/{self.total_steps} '
             f'(epoch {epoch:.2f})']
    if 'loss' in metrics:
      parts.append(f'loss {metrics["loss"]:.4f}')
    if 'error' in metrics:
      parts.append(f'error {100 * metrics["error"]:.2f}%')
    if 'learning_rate' in metrics:
      parts.append(f'lr {metrics["learning_rate"]:.3g}')
    line = ' '.join(parts)
    if 'sec_per_step' in metrics:
      line += (f' | {metrics["sec_per_step"]:.3f} s/step '
               f'{metrics.get("images_per_sec", 0):.0f} img/s')
    if self.sec_per_step is not None:
      line += f' | ETA {format_duration(self.eta_seconds(step))}'
    logging.info(line)
    return line
