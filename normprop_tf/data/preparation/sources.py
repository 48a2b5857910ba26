"""Reading a dataset from its source into uint8 arrays.

Sources (`--source`):
- 'tfds': `tfds.builder(...)` (`tfds_source`); fails fast offline.
- A folder of class subfolders, or a .tar.gz/.tgz/.tar of one
  (`class_folders`): `train/<class>/<image>` and `test/<class>/<image>`
  (SVHN may add `extra/<class>/...`), optionally under one top-level folder.
- The original `cifar-10-python.tar.gz` / `cifar-100-python.tar.gz`
  (`cifar_pickle`, unpickled with a restricted unpickler), recognised by
  their member names.

Archives are streamed: only image members and the CIFAR batch files are
read; any other member is skipped without being read.

`load_source` returns `RawData`: {split: (uint8 [N, H, W, C], int64 [N])}
for 'train', 'test' and, for SVHN, 'extra'. Images are checked for shape
and labels for range, and every error names the file and the fix. A
`subset_per_class` keeps the first N images (by file name) of every class;
folder and archive sources decode only those.
"""

import dataclasses
import hashlib
import os

from absl import logging
import numpy as np
import tensorflow as tf

from normprop_tf.data.errors import DATASETS
from normprop_tf.data.errors import DataError
from normprop_tf.data.preparation import cifar_pickle
from normprop_tf.data.preparation import class_folders
from normprop_tf.data.preparation import tfds_source
from normprop_tf.data.preparation.progress import Progress


@dataclasses.dataclass
class RawData:
  """Arrays per source split, the class names, and where they came from."""
  splits: dict
  class_names: list
  kind: str


def source_fingerprint(source, dataset, tfds_data_dir=None):
  """A cheap string that changes when the source's content changes."""
  if source == 'tfds':
    return (f'tfds:{tfds_source.TFDS_NAMES[dataset]}:'
            f'{tfds_data_dir or "default"}')
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


def subset_limits(subset_per_class):
  """{split: N} from None, an int (every split) or a {split: N} dict."""
  if subset_per_class is None:
    return None
  if isinstance(subset_per_class, int) and not isinstance(
      subset_per_class, bool):
    return {split: int(subset_per_class) for split in class_folders.SPLITS}
  if isinstance(subset_per_class, dict) and all(
      isinstance(v, int) and not isinstance(v, bool) and v > 0
      for v in subset_per_class.values()):
    return {str(k): int(v) for k, v in subset_per_class.items()}
  raise DataError(
      'subset_per_class must be None, a positive int or {split: int}. '
      f'Received: subset_per_class={subset_per_class!r}')


def load_source(dataset, source, tfds_data_dir=None, use_extra=True,
                subset_per_class=None):
  """Loads every split of `dataset` from `source` (see the module docstring)."""
  spec = DATASETS[dataset]
  limits = subset_limits(subset_per_class)
  if source == 'tfds':
    splits, names = tfds_source.load_tfds(dataset, tfds_data_dir, use_extra)
    raw = RawData(_first_per_class(splits, limits), names, 'tfds')
  elif os.path.isdir(source):
    raw = _load_class_folders(dataset, class_folders.folder_files(source),
                              source, use_extra, limits)
  elif os.path.isfile(source):
    members = read_archive(source)
    roots = {name.split('/')[0] for name in members}
    pickle_root = next((r for r in roots if r in cifar_pickle.PICKLE_ROOTS),
                       None)
    if pickle_root:
      splits, names = cifar_pickle.load(dataset, members, pickle_root, source)
      raw = RawData(_first_per_class(splits, limits), names, 'cifar_pickle')
    else:
      raw = _load_class_folders(dataset, members, source, use_extra, limits)
  else:
    source_fingerprint(source, dataset)  # raises the "does not exist" error
  for split, (images, labels) in raw.splits.items():
    check_arrays(images, labels, spec, f'{source} ({split})')
  return raw


def _first_per_class(splits, limits):
  """The first N examples of every class, in source order, per split."""
  if limits is None:
    return splits
  out = {}
  for split, (images, labels) in splits.items():
    if split not in limits:
      out[split] = (images, labels)
      continue
    keep = np.concatenate([np.flatnonzero(labels == c)[:limits[split]]
                           for c in np.unique(labels)])
    keep.sort()
    out[split] = (images[keep], labels[keep])
  return out


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


def read_archive(path):
  """{member path: bytes} of the image and CIFAR-batch members of a tar.

  The archive is streamed; other members are skipped without being read.
  """
  members, skipped = {}, 0
  progress = Progress(f'read {os.path.basename(path)}', 0, unit='files')
  try:
    with class_folders.open_tar(path) as tar:
      for member in tar:
        if not member.isfile():
          continue
        name = class_folders.member_name(member)
        if not (class_folders.is_image(name) or name.split('/')[0] in
                cifar_pickle.PICKLE_ROOTS):
          skipped += 1
          continue
        members[name] = tar.extractfile(member).read()
        progress.update()
  except (EOFError, OSError, class_folders.tarfile.TarError) as e:
    raise class_folders.tar_error(path, e) from None
  progress.done()
  if skipped:
    logging.info('skipped %d non-image members of %s', skipped, path)
  return members


def _load_class_folders(dataset, files, source, use_extra, limits=None):
  """Decodes a class-folder tree given as {member: bytes or file path}."""
  spec = DATASETS[dataset]
  splits = ['train', 'test'] + (['extra'] if dataset == 'svhn' and use_extra
                                else [])
  grouped = class_folders.layout(files, source, splits)
  classes = _check_classes(sorted(grouped['train']), spec, dataset, source)
  if limits:
    grouped = class_folders.first_per_class(grouped, limits)
  out = {}
  for split in splits:
    unknown = sorted(set(grouped[split]) - set(classes))
    if unknown:
      raise DataError(
          f'--source={source}: class folder(s) {", ".join(unknown)} of '
          f'{split}/ do not exist in train/. Rename them to match train/.')
    names, labels = [], []
    for label, cls in enumerate(classes):
      members = sorted(grouped[split].get(cls, []))
      names += members
      labels += [label] * len(members)
    images = decode_images(names, files, spec['image_shape'], source,
                           f'decode {split}')
    out[split] = (images, np.asarray(labels, np.int64))
  return RawData(out, classes, 'folder' if os.path.isdir(source) else 'tar')


def _check_classes(classes, spec, dataset, source):
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
  return classes


def _read_all(names, files):
  contents = []
  for name in names:
    if isinstance(files[name], bytes):
      contents.append(files[name])
    else:
      with open(files[name], 'rb') as f:
        contents.append(f.read())
  return contents


def decode_images(names, files, shape, source, label):
  """Decodes `files[name]` (bytes or a path) for every name, in parallel."""
  contents = _read_all(names, files)
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
      raise _undecodable(names[i:], contents[i:], source, e) from None
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


def _undecodable(names, contents, source, error):
  """The DataError naming the first undecodable file of a failed batch.

  Decoding is in order, so the culprit is among the files no batch has
  delivered yet: decode them one by one.
  """
  for name, data in zip(names, contents):
    try:
      tf.io.decode_image(data, expand_animations=False)
    except tf.errors.InvalidArgumentError:
      return DataError(
          f'{source}: {name} is not a decodable image '
          f'({error.message.splitlines()[0]}). Replace or delete it.')
  return error
