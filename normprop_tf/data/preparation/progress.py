"""A progress line with counts and rate, logged at most every few seconds."""

import time

from absl import logging


class Progress:
  """Logs `label: done/total (pct) rate unit/s` as work advances.

  Usage:
    progress = Progress('decode train', total=50000, unit='img')
    for ...:
      progress.update(1)
    progress.done()
  """

  def __init__(self, label, total, unit='img', every_seconds=2.0):
    self.label, self.total, self.unit = label, int(total), unit
    self.every = every_seconds
    self.count = 0
    self.start = self.last = time.monotonic()

  def _line(self):
    elapsed = max(time.monotonic() - self.start, 1e-9)
    done = (f'{self.count}/{self.total} '
            f'({100.0 * self.count / self.total:.0f}%)' if self.total else
            f'{self.count}')
    return (f'{self.label}: {done}, '
            f'{self.count / elapsed:,.0f} {self.unit}/s, {elapsed:.1f} s')

  def update(self, n=1):
    self.count += n
    now = time.monotonic()
    if now - self.last >= self.every:
      self.last = now
      logging.info('%s', self._line())

  def done(self):
    logging.info('%s', self._line())
    return time.monotonic() - self.start
