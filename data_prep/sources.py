"""Reading a dataset from its source into uint8 arrays.

Sources (`--source`):
- 'tfds' (default): `tfds.builder(...)`. When the dataset is not already in
  the TFDS data dir, the download host is probed first (5 s timeout), so an
  offline machine fails at once with a clear message instead of hanging.
- A folder of class subfolders, or a .tar.gz/.tgz/.tar of one:
  `train/<class>/<image>` and `test/<class>/<image>` (SVHN may add
  `extra/<class>/...`), optionally under one top-level directory. Class ids
  are the indices of the sorted class-folder names of `train/`. Hidden files
  and files that are not .jpg/.jpeg/.png/.bmp/.gif are skipped.
- The original `cifar-10-python.tar.gz` / `cifar-100-python.tar.gz`
  (pickled batches; recognised by their member names). Unpickling runs code
  from the archive: use only archives you trust.

`load_source` returns `RawData`: {split: (uint8 [N, H, W, C], int64 [N])}
for 'train', 'test' and, for SVHN, 'extra'; images are checked for shape
and labels for range, and every error names the file and the fix.
"""

import dataclasses
import hashlib
import io
import os
import pickle
import socket
import tarfile

from absl import logging
import numpy as np
import tensorflow as tf

from data_prep.progress import Progress
from normprop_tf.data.errors import DATASETS
from normprop_tf.data.errors import DataError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
TFDS_NAMES = {'cifar10': 'cifar10', 'cifar100': 'cifar100',
              'svhn': 'svhn_cropped'}
# (host, port) that TFDS downloads each dataset from.
TFDS_HOSTS = {'cifar10': ('www.cs.toronto.edu', 443),
              'cifar100': ('www.cs.toronto.edu', 443),
              'svhn': ('ufldl.stanford.edu', 80)}
_PICKLE_ROOTS = {'cifar-10-batches-py': 'cifar10',
                 'cifar-100-python': 'cifar100'}


@dataclasses.dataclass
class RawData:
  """Arrays per source split, the class names, and where they came from."""
  splits: dict
  class_names: list
  kind: str


# ---- identity of a source (for the idempotency check) ---------------------


def source_fingerprint(source, dataset, tfds_data_dir=None):
  """A cheap string that changes when the source's content changes."""
  if source == 'tfds':
    return f'tfds:{TFDS_NAMES[dataset]}:{tfds_data_dir or "default"}'
  if os.path.isdir(source):
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(source):
      dirs.sort()
      for name in sorted(files):
        path = os.path.join(root, name)
        st = os.stat(path)
        digest.update(f'{os.path.relpath(path, source)}\0{st.st_size}\0'
                      f'{st.st_mtime_ns}\n'.encode())
    return 'folder:' + digest.hexdigest()
  if os.path.isfile(source):
    digest = hashlib.sha256()
    with open(source, 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 22), b''):
        digest.update(chunk)
    return 'file:' + digest.hexdigest()
  raise DataError(
      f'--source={source} does not exist. Give a folder of class subfolders, '
      'a .tar.gz of one, cifar-10-python.tar.gz / cifar-100-python.tar.gz, '
      'or "tfds".')


def load_source(dataset, source, tfds_data_dir=None, use_extra=True):
  """Loads every split of `dataset` from `source` (see the module docstring)."""
  spec = DATASETS[dataset]
  if source == 'tfds':
    raw = load_tfds(dataset, tfds_data_dir, use_extra)
  elif os.path.isdir(source):
    raw = _load_class_folders(dataset, _folder_files(source), source,
                              use_extra)
  elif os.path.isfile(source):
    members = _read_archive(source)
    roots = {name.split('/')[0] for name in members}
    pickle_root = next((r for r in roots if r in _PICKLE_ROOTS), None)
    if pickle_root:
      raw = _load_cifar_pickle(dataset, members, pickle_root, source)
    else:
      raw = _load_class_folders(dataset, members, source, use_extra)
  else:
    source_fingerprint(source, dataset)  # raises the "does not exist" error
  for split, (images, labels) in raw.splits.items():
    check_arrays(images, labels, spec, f'{source} ({split})')
  return raw


def check_arrays(images, labels, spec, where):
  """Raises DataError on a wrong image shape or an out-of-range label."""
  shape = tuple(spec['image_shape'])
  if tuple(images.shape[1:]) != shape or images.dtype != np.uint8:
    raise DataError(
        f'Images from {where} have shape {tuple(images.shape[1:])} and dtype '
        f'{images.dtype}; expected uint8 {shape}. Convert the source or pick '
        'the matching --dataset.')
  bad = np.flatnonzero((labels < 0) | (labels >= spec['num_classes']))
  if bad.size:
    raise DataError(
        f'Label {int(labels[bad[0]])} (example {int(bad[0])}) from {where} is '
        f'out of range [0, {spec["num_classes"]}): {bad.size} labels are. '
        'Check that the source matches --dataset.')


# ---- TFDS -----------------------------------------------------------------


def check_reachable(host, port, timeout=5.0):
  """Raises OSError when (host, port) cannot be connected within `timeout`."""
  with socket.create_connection((host, port), timeout=timeout):
    pass


def load_tfds(dataset, tfds_data_dir=None, use_extra=True, timeout=5.0):
  """Loads train/test (and SVHN extra) through TFDS; fails fast offline."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = TFDS_NAMES[dataset]
  builder = tfds.builder(name, data_dir=tfds_data_dir)
  if not builder.is_prepared():
    root = os.path.dirname(os.path.dirname(os.fspath(builder.data_dir)))
    manual = os.path.join(root, 'downloads', 'manual')
    if not (os.path.isdir(manual) and os.listdir(manual)):
      host, port = TFDS_HOSTS[dataset]
      try:
        check_reachable(host, port, timeout)
      except OSError as e:
        raise DataError(
            f'TFDS cannot download {name}: {host}:{port} is unreachable '
            f'({e}). Use a local copy instead, e.g. '
            '--source=../shared/data/cifar10-jpg.tar.gz (a folder of class '
            'subfolders or a .tar.gz of one, or cifar-10-python.tar.gz), or '
            f'put the TFDS archive in {manual}/.') from None
    logging.info('TFDS: downloading and preparing %s into %s', name, root)
    builder.download_and_prepare()
  splits = ['train', 'test'] + (['extra'] if dataset == 'svhn' and use_extra
                                else [])
  out = {}
  for split in splits:
    images, labels = [], []
    ds = builder.as_dataset(split=split, batch_size=4096, as_supervised=True)
    total = (builder.info.splits[split].num_examples
             if split in builder.info.splits else 0)
    progress = Progress(f'tfds {name} {split}', total=total)
    for x, y in tfds.as_numpy(ds):
      images.append(x)
      labels.append(y)
      progress.update(len(y))
    progress.done()
    out[split] = (np.concatenate(images).astype(np.uint8),
                  np.concatenate(labels).astype(np.int64))
  names = builder.info.features['label'].names
  return RawData(out, list(names), 'tfds')


# ---- archives and folders -------------------------------------------------


def _read_archive(path):
  """{member path: bytes} of every regular file of a tar archive."""
  members = {}
  progress = Progress(f'read {os.path.basename(path)}', 0, unit='files')
  try:
    with tarfile.open(path, 'r|*') as tar:
      for member in tar:
        if member.isfile():
          name = member.name[2:] if member.name.startswith('./') else (
              member.name)
          members[name] = tar.extractfile(member).read()
          progress.update()
  except (tarfile.TarError, OSError, EOFError) as e:
    raise DataError(
        f'--source={path} is not a readable tar archive ({e}). Give a folder '
        'of class subfolders, a .tar.gz of one, or the original '
        'cifar-10-python.tar.gz / cifar-100-python.tar.gz.') from None
  progress.done()
  return members


def _folder_files(root):
  """{relative path: absolute path} of every file under `root`."""
  files = {}
  for dirpath, dirs, names in os.walk(root):
    dirs.sort()
    for name in names:
      path = os.path.join(dirpath, name)
      files[os.path.relpath(path, root).replace(os.sep, '/')] = path
  return files


def _is_image(name):
  return (not any(part.startswith('.') for part in name.split('/')) and
          name.lower().endswith(IMAGE_EXTENSIONS))


def _layout(files, source, splits):
  """{split: {class: [member, ...]}} of a class-folder tree."""
  images = sorted(n for n in files if _is_image(n))
  if not images:
    raise DataError(
        f'--source={source} holds no images (.jpg/.jpeg/.png/.bmp/.gif). '
        'Expected train/<class>/<image> and test/<class>/<image>.')
  skipped = len(files) - len(images)
  if skipped:
    logging.info('skipped %d non-image or hidden files in %s', skipped, source)
  # Allow one top-level folder above train/ and test/.
  prefixes = set()
  for name in images:
    parts = name.split('/')
    if 'train' in parts[:2] and len(parts) > parts.index('train') + 1:
      prefixes.add(''.join(p + '/' for p in parts[:parts.index('train')]))
  prefix = min(prefixes, key=len) if prefixes else None
  if prefix is None:
    raise DataError(
        f'--source={source} has no train/ folder at its top (or one level '
        'below). Expected train/<class>/<image> and test/<class>/<image>.')
  layout = {s: {} for s in splits}
  for name in images:
    if not name.startswith(prefix):
      continue
    parts = name[len(prefix):].split('/')
    if parts[0] not in layout:
      continue
    if len(parts) != 3:
      raise DataError(
          f'{source}: {name} is not at <split>/<class>/<image>. Move it into '
          'a class folder (class ids come from the folder names).')
    layout[parts[0]].setdefault(parts[1], []).append(name)
  for split in splits:
    if not layout[split]:
      raise DataError(
          f'--source={source} has no images under {prefix}{split}/. Expected '
          f'{prefix}{split}/<class>/<image> files.')
  return layout


def _load_class_folders(dataset, files, source, use_extra):
  """Decodes a class-folder tree given as {member: bytes or file path}."""
  spec = DATASETS[dataset]
  splits = ['train', 'test'] + (['extra'] if dataset == 'svhn' and use_extra
                                else [])
  layout = _layout(files, source, splits)
  classes = sorted(layout['train'])
  if len(classes) > spec['num_classes']:
    raise DataError(
        f'--source={source} has {len(classes)} class folders in train/, so '
        f'folder {classes[spec["num_classes"]]!r} would get label '
        f'{spec["num_classes"]}, out of range for {dataset} '
        f'({spec["num_classes"]} classes). Remove the extra folders or pick '
        'the matching --dataset.')
  if len(classes) < spec['num_classes']:
    raise DataError(
        f'--source={source} has {len(classes)} class folders in train/ '
        f'({", ".join(classes)}); {dataset} needs {spec["num_classes"]}. Add '
        'the missing classes (an empty or partial source shifts the labels).')
  out = {}
  for split in splits:
    unknown = sorted(set(layout[split]) - set(classes))
    if unknown:
      raise DataError(
          f'--source={source}: class folder(s) {", ".join(unknown)} of '
          f'{split}/ do not exist in train/. Rename them to match train/.')
    names, labels = [], []
    for label, cls in enumerate(classes):
      members = sorted(layout[split].get(cls, []))
      names += members
      labels += [label] * len(members)
    images = decode_images(names, files, spec['image_shape'], source,
                           f'decode {split}')
    out[split] = (images, np.asarray(labels, np.int64))
  return RawData(out, classes, 'folder' if os.path.isdir(source) else 'tar')


def decode_images(names, files, shape, source, label):
  """Decodes `files[name]` (bytes or a path) for every name, in parallel."""
  contents = []
  for name in names:
    if isinstance(files[name], bytes):
      contents.append(files[name])
    else:
      with open(files[name], 'rb') as f:
        contents.append(f.read())
  shape = tuple(shape)

  def decode(data):
    image = tf.io.decode_image(data, expand_animations=False)
    actual = tf.shape(image)
    ok = tf.reduce_all(tf.equal(actual, shape))
    image = tf.cond(ok, lambda: tf.reshape(image, shape),
                    lambda: tf.zeros(shape, tf.uint8))
    return image, actual

  ds = tf.data.Dataset.from_tensor_slices(tf.constant(contents, tf.string))
  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(512).prefetch(2)
  out = np.empty((len(names), *shape), np.uint8)
  progress = Progress(label, len(names))
  it, i = iter(ds), 0
  while i < len(names):
    try:
      images, shapes = next(it)
    except tf.errors.InvalidArgumentError as e:
      # Decoding is in order, so the first undecodable file is the first
      # one no batch delivered: find it by decoding the rest one by one.
      for name, data in zip(names[i:], contents[i:]):
        try:
          tf.io.decode_image(data, expand_animations=False)
        except tf.errors.InvalidArgumentError:
          raise DataError(
              f'{source}: {name} is not a decodable image '
              f'({e.message.splitlines()[0]}). Replace or delete it.'
          ) from None
      raise
    shapes = shapes.numpy()
    bad = np.flatnonzero((shapes != shape).any(axis=1))
    if bad.size:
      raise DataError(
          f'{source}: {names[i + bad[0]]} has shape '
          f'{tuple(int(d) for d in shapes[bad[0]])}; '
          f'expected {shape} (H, W, C). Resize/convert the images, or pick '
          'the matching --dataset.')
    out[i:i + len(shapes)] = images.numpy()
    i += len(shapes)
    progress.update(len(shapes))
  progress.done()
  return out


def _load_cifar_pickle(dataset, members, root, source):
  """The original CIFAR python archives: pickled dicts of uint8 rows."""
  found = _PICKLE_ROOTS[root]
  if found != dataset:
    raise DataError(
        f'--source={source} is the {found} archive, but --dataset={dataset}. '
        f'Use --dataset={found} or the {dataset} archive.')
  if found == 'cifar10':
    parts = {'train': [f'{root}/data_batch_{i}' for i in range(1, 6)],
             'test': [f'{root}/test_batch']}
    meta, key, names_key = f'{root}/batches.meta', b'labels', b'label_names'
  else:
    parts = {'train': [f'{root}/train'], 'test': [f'{root}/test']}
    meta, key, names_key = f'{root}/meta', b'fine_labels', b'fine_label_names'
  out = {}
  for split, batches in parts.items():
    images, labels = [], []
    for name in batches:
      if name not in members:
        raise DataError(f'{source} lacks {name}: the archive is incomplete. '
                        'Download it again.')
      try:
        batch = pickle.load(io.BytesIO(members[name]), encoding='bytes')
        data = np.asarray(batch[b'data'], np.uint8)
        batch_labels = np.asarray(batch[key], np.int64)
      except (pickle.UnpicklingError, KeyError, EOFError, ValueError) as e:
        raise DataError(f'{source}: {name} is corrupt ({e!r}). Download the '
                        'archive again.') from None
      if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(
          batch_labels):
        raise DataError(
            f'{source}: {name} holds data of shape {data.shape} and '
            f'{len(batch_labels)} labels; expected [N, 3072] (32x32x3, '
            'channel-major) and N labels.')
      images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
      labels.append(batch_labels)
    out[split] = (np.ascontiguousarray(np.concatenate(images)),
                  np.concatenate(labels))
  try:
    class_names = [n.decode() for n in pickle.load(
        io.BytesIO(members[meta]), encoding='bytes')[names_key]]
  except (KeyError, pickle.UnpicklingError, EOFError):
    class_names = [str(i) for i in range(DATASETS[dataset]['num_classes'])]
  return RawData(out, class_names, 'cifar_pickle')
