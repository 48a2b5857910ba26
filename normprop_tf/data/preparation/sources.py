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
import os

from absl import logging
import numpy as np
import tensorflow as tf

from normprop_tf.data.errors import DATASETS
from normprop_tf.data.errors import DataError
from normprop_tf.data.preparation import cifar_pickle
from normprop_tf.data.preparation import class_folders
from normprop_tf.data.preparation import options as options_lib
from normprop_tf.data.preparation import tfds_source
from normprop_tf.data.preparation.progress import Progress


@dataclasses.dataclass
class RawData:
  """Arrays per source split, the class names, and where they came from."""
  splits: dict
  class_names: list
  kind: str


source_fingerprint = options_lib.source_fingerprint
subset_limits = options_lib.subset_limits


def load_source(dataset, source, options=None):
  """Loads every split of `dataset` from `source` (see the module docstring).

  Args:
    dataset: 'cifar10', 'cifar100' or 'svhn'.
    source: 'tfds', a folder, a tar archive (class folders or CIFAR batches).
    options: a `PrepareOptions` (svhn_use_extra, tfds_data_dir,
      subset_per_class and jpeg_idct are used here).
  """
  options = options or options_lib.PrepareOptions()
  spec = DATASETS[dataset]
  limits = subset_limits(options.subset_per_class)
  use_extra, idct = options.svhn_use_extra, options.jpeg_idct
  if source == 'tfds':
    splits, names = tfds_source.load_tfds(dataset, options.tfds_data_dir,
                                          use_extra)
    raw = RawData(_first_per_class(splits, limits), names, 'tfds')
  elif os.path.isdir(source):
    raw = _load_class_folders(dataset, class_folders.folder_files(source),
                              source, use_extra, limits, idct)
  elif os.path.isfile(source):
    members = read_archive(source)
    roots = {name.split('/')[0] for name in members}
    pickle_root = next((r for r in roots if r in cifar_pickle.PICKLE_ROOTS),
                       None)
    if pickle_root:
      splits, names = cifar_pickle.load(dataset, members, pickle_root, source)
      raw = RawData(_first_per_class(splits, limits), names, 'cifar_pickle')
    else:
      raw = _load_class_folders(dataset, members, source, use_extra, limits,
                                idct)
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
  """{member path: bytes} of the image and CIFAR-batch members of a tar."""
  return class_folders.read_archive(path, keep=lambda name: (
      class_folders.is_image(name) or
      name.split('/')[0] in cifar_pickle.PICKLE_ROOTS))


def _load_class_folders(dataset, files, source, use_extra, limits=None,
                        jpeg_idct='accurate'):
  """Decodes a class-folder tree given as {member: bytes or file path}."""
  spec = DATASETS[dataset]
  labelled, classes = class_folders.labelled_names(dataset, files, source,
                                                   use_extra, limits)
  out = {}
  for split, (names, labels) in labelled.items():
    images = decode_images(names, files, spec['image_shape'], source,
                           f'decode {split}', jpeg_idct)
    out[split] = (images, labels)
  return RawData(out, classes, 'folder' if os.path.isdir(source) else 'tar')


def decode_image(data, jpeg_idct='accurate'):
  """tf.io.decode_image, with JPEGs decoded by the exact IDCT by default.

  TensorFlow's own default for JPEGs is "system-specific" (a fast IDCT on
  x86 builds), up to 5 levels off the exact one that Pillow and libjpeg use
  by default; 'accurate' matches them bit for bit.
  """
  if jpeg_idct == 'tf_default':
    return tf.io.decode_image(data, expand_animations=False)
  return tf.cond(
      tf.io.is_jpeg(data),
      lambda: tf.io.decode_jpeg(data, dct_method='INTEGER_ACCURATE'),
      lambda: tf.io.decode_image(data, expand_animations=False))


def decode_images(names, files, shape, source, label, jpeg_idct='accurate'):
  """Decodes `files[name]` (bytes or a path) for every name, in parallel."""
  contents = [class_folders.read(files[name]) for name in names]
  shape = tuple(shape)

  def decode(data):
    image = decode_image(data, jpeg_idct)
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
