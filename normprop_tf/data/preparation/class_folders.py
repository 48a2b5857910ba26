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
