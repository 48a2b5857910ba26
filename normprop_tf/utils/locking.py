"""An exclusive lock on a directory, so two processes never write one at once.

    with locking.DirectoryLock(data_dir, 'preparing cifar10', wait=True):
      ...  # the only writer of data_dir

The lock is `fcntl.flock` on `<directory>/.lock`, which the kernel releases
when the holding process dies (even on `kill -9`), so a crash never leaves
a directory locked. The file records who holds it (pid, host, purpose,
start time, command) for the message a second writer gets:

- `wait=True` (data preparation): the second writer logs who holds the
  lock, waits for it, then carries on (it usually finds the data prepared);
- `wait=False` (training): it stops at once with `LockedError`, one line
  that names the holder and the way out.

On object stores (`gs://`) there is no such lock: `DirectoryLock` does
nothing there, and the rule is one writer per directory (prepare the data
once before starting the workers; give every run its own model_dir).
`docs/distributed.md` says the same.
"""

import fcntl
import json
import os
import socket
import sys
import time

from absl import logging

from normprop_tf.utils import fileio

LOCK_FILE = '.lock'


class LockedError(RuntimeError):
  """Another process holds the lock; the message names it and the fix."""


def _describe(path):
  try:
    with open(path, encoding='utf-8') as f:
      holder = json.load(f)
  except (OSError, ValueError):
    return 'another process'
  return (f'pid {holder.get("pid")} on {holder.get("host")} '
          f'({holder.get("purpose")}, since {holder.get("since")})')


class DirectoryLock:
  """Exclusive `fcntl` lock on a local directory (a no-op on gs://).

  Args:
    directory: the directory to lock (created if missing).
    purpose: what the holder does, for the other process's message.
    wait: block until the lock is free (logging who holds it) instead of
      raising `LockedError`.
    hint: appended to the `LockedError` message: the way out.
  """

  def __init__(self, directory, purpose, wait=False, hint=''):
    self.directory = directory
    self.purpose = purpose
    self.wait = wait
    self.hint = hint
    self._fd = None

  @property
  def path(self):
    return os.path.join(self.directory, LOCK_FILE)

  def acquire(self):
    if fileio.is_remote(self.directory):
      return self
    os.makedirs(self.directory, exist_ok=True)
    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _describe(self.path)
      if not self.wait:
        os.close(self._fd)
        self._fd = None
        raise LockedError(f'{self.directory} is in use by {holder}. '
                          f'{self.hint}'.strip()) from None
      logging.warning('%s is in use by %s; waiting for it to finish.',
                      self.directory, holder)
      start = time.monotonic()
      fcntl.flock(self._fd, fcntl.LOCK_EX)
      logging.info('%s is free after %.0f s.', self.directory,
                   time.monotonic() - start)
    os.ftruncate(self._fd, 0)
    os.write(self._fd, json.dumps({
        'pid': os.getpid(), 'host': socket.gethostname(),
        'purpose': self.purpose,
        'since': time.strftime('%Y-%m-%d %H:%M:%S'),
        'command': ' '.join(sys.argv)}).encode())
    return self

  def release(self):
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
