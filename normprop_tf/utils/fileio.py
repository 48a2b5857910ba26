"""Atomic file writes, for local paths and (through tf.io.gfile) gs:// URLs.

Every file the project writes as a whole (manifests, statistics, records,
configs, reports) goes through `atomic_write`: the data is written under a
temporary name unique to this process and renamed over the target, so a
reader, or a run killed half-way, never sees a partial file, and two
processes writing the same file never share a temporary.

Local paths need no TensorFlow. Paths with a scheme (`gs://`, `ram://`)
import `tensorflow` lazily and use `tf.io.gfile`; object stores rename by
copying, which is still all-or-nothing for a reader.
"""

import json
import os
import sys
import tempfile
import uuid


def errors():
  """The exceptions a file operation here can raise (for `except`)."""
  tf = sys.modules.get('tensorflow')
  return (OSError,) + ((tf.errors.OpError,) if tf is not None else ())


def is_remote(path):
  """True for URLs with a scheme such as gs:// (handled by tf.io.gfile)."""
  return '://' in str(path)


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def atomic_write(path, data):
  """Writes `data` (str or bytes) to `path` atomically.

  Raises:
    OSError (local) or tf.errors.OpError (remote) when the directory is
    missing or not writable; nothing is left behind under the target name.
  """
  path = os.fspath(path)
  mode = 'wb' if isinstance(data, bytes) else 'w'
  if is_remote(path):
    gfile = _gfile()
    tmp = f'{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}'
    try:
      with gfile.GFile(tmp, mode) as f:
        f.write(data)
      gfile.rename(tmp, path, overwrite=True)
    finally:
      if gfile.exists(tmp):
        gfile.remove(tmp)
    return
  directory = os.path.dirname(path) or '.'
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.',
                             suffix='.tmp', dir=directory)
  try:
    with os.fdopen(fd, mode, **({} if mode == 'wb' else
                                {'encoding': 'utf-8'})) as f:
      f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def json_text(obj, sort_keys=True):
  """The project's JSON file format: indented, a newline at the end."""
  return json.dumps(obj, indent=1, sort_keys=sort_keys, default=str) + '\n'


def write_json(path, obj, sort_keys=True):
  """Writes `obj` as indented JSON, atomically."""
  atomic_write(path, json_text(obj, sort_keys))


def read_text(path):
  """The text of a local or remote file."""
  if is_remote(path):
    with _gfile().GFile(path, 'r') as f:
      return f.read()
  with open(path, encoding='utf-8') as f:
    return f.read()


def exists(path):
  return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def makedirs(path):
  if is_remote(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def open_file(path, mode='r'):
  """`open` for local paths, `tf.io.gfile.GFile` for remote ones."""
  if is_remote(path):
    return _gfile().GFile(path, mode)
  return open(path, mode, **({} if 'b' in mode else {'encoding': 'utf-8'}))


def size(path):
  """Size of a file in bytes."""
  return (_gfile().stat(path).length if is_remote(path) else
          os.path.getsize(path))


def isdir(path):
  return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def remove(path):
  if is_remote(path):
    _gfile().remove(path)
  else:
    os.remove(path)


def listdir(path):
  return (_gfile().listdir(path) if is_remote(path) else
          sorted(os.listdir(path)))


def glob(pattern):
  """Paths matching a shell pattern (sorted)."""
  if is_remote(pattern):
    return sorted(_gfile().glob(pattern))
  import glob as glob_lib  # pylint: disable=g-import-not-at-top
  return sorted(glob_lib.glob(pattern))
