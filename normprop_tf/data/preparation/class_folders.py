"""The class-folder layout of image sources: one walk for every reader.

A class-folder source holds `<split>/<class>/<image>` files, for splits
`train`, `test` and (SVHN) `extra`, optionally under one top-level folder.
It may be a directory or a tar archive of one. Class ids are the indices of
the sorted class-folder names of `train/`. Hidden files and files that are
not images (by extension) are skipped.

`list_files` gives {relative name: locator} for a folder or a tar archive,
`layout` groups the image names by split and class, and `read` returns the
bytes behind a locator. Both `sources` (the whole dataset) and
`auto.ensure_prepared` (a per-class subset) use them.
"""

import os
import tarfile

from absl import logging
import numpy as np

from normprop_tf.data import spec
from normprop_tf.data.errors import DataError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
SPLITS = ('train', 'test', 'extra')


def is_image(name):
  """Whether a relative name is a visible image file (by extension)."""
  return (not any(part.startswith('.') for part in name.split('/')) and
          name.lower().endswith(IMAGE_EXTENSIONS))


def folder_files(root):
  """{relative path with '/': absolute path} of every file under `root`."""
  files = {}
  for dirpath, dirs, names in os.walk(root):
    dirs.sort()
    for name in names:
      path = os.path.join(dirpath, name)
      files[os.path.relpath(path, root).replace(os.sep, '/')] = path
  return files


def layout(files, source, splits):
  """{split: {class: [name, ...]}} of the images among `files`' names.

  Raises:
    DataError: no images, no train/ folder, an image outside a class
      folder, or a requested split without images.
  """
  images = sorted(n for n in files if is_image(n))
  if not images:
    raise DataError(
        f'--source={source} holds no images (.jpg/.jpeg/.png/.bmp/.gif). '
        'Expected train/<class>/<image> and test/<class>/<image>.')
  skipped = len(files) - len(images)
  if skipped:
    logging.info('skipped %d non-image or hidden files in %s', skipped, source)
  prefix = _prefix(images, source)
  grouped = {s: {} for s in splits}
  for name in images:
    if not name.startswith(prefix):
      continue
    parts = name[len(prefix):].split('/')
    if parts[0] not in grouped:
      continue
    if len(parts) != 3:
      raise DataError(
          f'{source}: {name} is not at <split>/<class>/<image>. Move it into '
          'a class folder (class ids come from the folder names).')
    grouped[parts[0]].setdefault(parts[1], []).append(name)
  for split in splits:
    if not grouped[split]:
      raise DataError(
          f'--source={source} has no images under {prefix}{split}/. Expected '
          f'{prefix}{split}/<class>/<image> files.')
  return grouped


def _prefix(images, source):
  """The folder above train/ ('' or 'top/'): one level at most."""
  prefixes = set()
  for name in images:
    parts = name.split('/')
    if 'train' in parts[:2] and len(parts) > parts.index('train') + 1:
      prefixes.add(''.join(p + '/' for p in parts[:parts.index('train')]))
  if not prefixes:
    raise DataError(
        f'--source={source} has no train/ folder at its top (or one level '
        'below). Expected train/<class>/<image> and test/<class>/<image>.')
  return min(prefixes, key=len)


def first_per_class(grouped, limits):
  """Keeps the first `limits[split]` names (sorted) of every class folder.

  Args:
    grouped: {split: {class: [name, ...]}} from `layout`.
    limits: {split: N}; splits absent from it keep every image.
  """
  return {split: {cls: sorted(names)[:limits[split]] if split in limits else
                  sorted(names) for cls, names in classes.items()}
          for split, classes in grouped.items()}


def _check_classes(classes, dataset_spec, dataset, source):
  num_classes = dataset_spec['num_classes']
  if len(classes) > num_classes:
    raise DataError(
        f'--source={source} has {len(classes)} class folders in train/, so '
        f'folder {classes[num_classes]!r} would get label {num_classes}, out '
        f'of range for {dataset} ({num_classes} classes). Remove the extra '
        'folders or pick the matching --dataset.')
  if len(classes) < num_classes:
    raise DataError(
        f'--source={source} has {len(classes)} class folders in train/ '
        f'({", ".join(classes)}); {dataset} needs {num_classes}. Add the '
        'missing classes (an empty or partial source shifts the labels).')
  return classes


def labelled_names(dataset, files, source, use_extra=True, limits=None):
  """({split: (names, int64 labels)}, class names) of a class-folder tree.

  Class ids are the indices of the sorted class-folder names of train/;
  within a class, names are sorted. `limits` ({split: N}) keeps the first N
  names of every class.
  """
  splits = ['train', 'test'] + (['extra'] if dataset == 'svhn' and use_extra
                                else [])
  grouped = layout(files, source, splits)
  classes = _check_classes(sorted(grouped['train']), spec.DATASETS[dataset],
                           dataset, source)
  if limits:
    grouped = first_per_class(grouped, limits)
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
    out[split] = (names, np.asarray(labels, np.int64))
  return out, classes


def read(locator):
  """The bytes behind a `list_files`/`read_archive` value (bytes or a path)."""
  if isinstance(locator, bytes):
    return locator
  with open(locator, 'rb') as f:
    return f.read()


def tar_error(path, error):
  return DataError(
      f'--source={path} is not a readable tar archive ({error}). Give a '
      'folder of class subfolders, a .tar.gz of one, or the original '
      'cifar-10-python.tar.gz / cifar-100-python.tar.gz.')


def open_tar(path):
  """Opens a tar archive for streaming (any compression)."""
  try:
    return tarfile.open(path, 'r|*')
  except (tarfile.TarError, OSError, EOFError) as e:
    raise tar_error(path, e) from None


def member_name(member):
  return member.name[2:] if member.name.startswith('./') else member.name


def read_archive(path, keep=is_image):
  """{member path: bytes} of the members of a tar for which `keep` is true.

  The archive is streamed; other members are skipped without being read.
  """
  members, skipped = {}, 0
  try:
    with open_tar(path) as tar:
      for member in tar:
        if not member.isfile():
          continue
        name = member_name(member)
        if not keep(name):
          skipped += 1
          continue
        members[name] = tar.extractfile(member).read()
  except (EOFError, OSError, tarfile.TarError) as e:
    raise tar_error(path, e) from None
  if skipped:
    logging.info('skipped %d members of %s', skipped, path)
  return members
