"""The data of the Keras-only runner: NumPy arrays decoded with Pillow.

The TensorFlow path prepares TFRecords (`normprop_tf.data.preparation`);
this runner, for machines without TensorFlow, builds the same splits in
memory, from the same kind of local source:

- a folder of class subfolders or a tar archive of one, decoded with Pillow
  (whose JPEG decoding is bit-identical to the preparation's default,
  `jpeg_idct='accurate'`), or the original CIFAR python archives (read with
  the same restricted unpickler);
- the same class ids, subset, validation holdout and example order
  (`preparation.class_folders`, `preparation.splits`);
- the same statistics (`normprop_tf.data.stats.compute_stats`), hence the
  same standardization and ZCA.

The arrays are cached in `<data_dir>/numpy/` (`images.npz`, `stats.npz`,
`manifest.json`), reused when the manifest's preparation record matches.
TFDS needs TensorFlow: a `'tfds'` source is refused with one line that says
what to do.
"""

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
import time

from absl import logging
import numpy as np

from normprop_tf.data import spec
from normprop_tf.data import stats as stats_lib
from normprop_tf.data.errors import DataError
from normprop_tf.data.preparation import cifar_pickle
from normprop_tf.data.preparation import class_folders
from normprop_tf.data.preparation import counts
from normprop_tf.data.preparation import options as options_lib
from normprop_tf.data.preparation import splits as splits_lib
from normprop_tf.utils import fileio
from normprop_tf.utils import locking

CACHE_SUBDIR = 'numpy'


@dataclasses.dataclass
class Arrays:
  """A prepared dataset in memory.

  Attributes:
    splits: {split: (uint8 images [N, H, W, C], int64 labels [N])}.
    stats: a `normprop_tf.data.stats.Stats` of the training split.
    info: the manifest: dataset, counts, class names, `prepare_args`,
      `fingerprint` (sha256 of the arrays).
  """
  splits: dict
  stats: stats_lib.Stats
  info: dict


def _decode(data):
  import PIL.Image  # pylint: disable=g-import-not-at-top
  with PIL.Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert('RGB'))


def _decode_all(names, files, shape, source):
  """Decodes every file with Pillow, in threads; checks each shape."""
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    images = list(pool.map(lambda n: _decode(class_folders.read(files[n])),
                           names))
  out = np.empty((len(names), *shape), np.uint8)
  for i, (name, image) in enumerate(zip(names, images)):
    if image.shape != tuple(shape):
      raise DataError(f'{source}: {name} has shape {image.shape}; expected '
                      f'{tuple(shape)} (H, W, C).')
    out[i] = image
  return out


def _raw_splits(dataset, source, options):
  """{source split: (images, labels)} from a folder or an archive."""
  if source in (None, 'tfds'):
    archive = (f' or the original {dataset}-python archive'
               if dataset.startswith('cifar') else '')
    raise DataError(
        f'The Keras-only runner reads local copies only, and dataset.source '
        f'is {source!r}: TFDS needs TensorFlow. Bind dataset.source to a '
        f'folder of class subfolders (one per label), a .tar.gz of '
        f'one{archive}. No offline copy of {dataset} comes with this '
        'project: bind your own, or train with the TensorFlow runner '
        '(`python -m normprop_tf.train`), which reads it through TFDS.')
  if os.path.isdir(source):
    files = class_folders.folder_files(source)
  elif os.path.isfile(source):
    files = class_folders.read_archive(source, keep=lambda n: (
        class_folders.is_image(n) or
        n.split('/')[0] in cifar_pickle.PICKLE_ROOTS))
    roots = {n.split('/')[0] for n in files} & set(cifar_pickle.PICKLE_ROOTS)
    if roots:
      return cifar_pickle.load(dataset, files, roots.pop(), source)[0]
  else:
    options_lib.source_fingerprint(source, dataset)  # "does not exist".
  labelled, _ = class_folders.labelled_names(
      dataset, files, source, options.svhn_use_extra,
      options_lib.subset_limits(options.subset_per_class))
  shape = spec.DATASETS[dataset]['image_shape']
  return {split: (_decode_all(names, files, shape, source), labels)
          for split, (names, labels) in labelled.items()}


def _fingerprint(splits):
  digest = hashlib.sha256()
  for split in sorted(splits):
    for array in splits[split]:
      digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


def build(dataset, source, options):
  """Decodes, splits and computes the statistics; returns `Arrays`."""
  start = time.monotonic()
  if options.jpeg_idct != 'accurate':
    raise DataError(
        "The Keras-only runner decodes JPEGs with Pillow, i.e. "
        "jpeg_idct='accurate'. Received: jpeg_idct="
        f'{options.jpeg_idct!r} (gin: dataset.jpeg_idct)')
  raw = _raw_splits(dataset, source, options)
  counts.check_counts(dataset, raw,
                      options_lib.subset_limits(options.subset_per_class),
                      source)
  parts = splits_lib.split_parts(dataset, raw, options.validation_size,
                                 options.seed)
  splits = {split: splits_lib.assemble(raw, parts[split], options.seed, split)
            for split in spec.SPLITS if split in parts}
  arrays, params = stats_lib.compute_stats(
      splits['train'][0], options.compute_zca, options.zca_epsilon)
  dataset_spec = spec.DATASETS[dataset]
  info = {
      'dataset': dataset,
      'image_shape': list(dataset_spec['image_shape']),
      'num_classes': dataset_spec['num_classes'],
      'splits': {s: {'num_examples': int(len(y)),
                     'class_counts': np.bincount(
                         y, minlength=dataset_spec['num_classes']).tolist()}
                 for s, (_, y) in splits.items()},
      'stats': params,
      'prepare_args': options_lib.arguments_record(dataset, source, options),
      'fingerprint': _fingerprint(splits),
      'seconds': round(time.monotonic() - start, 1),
  }
  return Arrays(splits, stats_lib.Stats(info=info, arrays=arrays), info)


def _save(directory, data):
  fileio.makedirs(directory)
  flat = {f'{s}_{k}': a for s, (x, y) in data.splits.items()
          for k, a in (('images', x), ('labels', y))}
  for name, content in (('images.npz', flat), ('stats.npz', data.stats.arrays)):
    buf = io.BytesIO()
    np.savez(buf, **content)
    fileio.atomic_write(os.path.join(directory, name), buf.getvalue())
  fileio.write_json(os.path.join(directory, 'manifest.json'), data.info)


def _load(directory, record):
  """The cached `Arrays` if their preparation record is `record`, else None."""
  path = os.path.join(directory, 'manifest.json')
  if not fileio.exists(path):
    return None
  with fileio.open_file(path) as f:
    info = json.load(f)
  if options_lib.differences(info.get('prepare_args', {}), record):
    return None
  with np.load(os.path.join(directory, 'images.npz')) as npz:
    splits = {s: (npz[f'{s}_images'], npz[f'{s}_labels'])
              for s in info['splits']}
  with np.load(os.path.join(directory, 'stats.npz')) as npz:
    arrays = {k: npz[k] for k in npz.files}
  if _fingerprint(splits) != info['fingerprint']:
    return None
  return Arrays(splits, stats_lib.Stats(info=info, arrays=arrays), info)


def load(dataset, data_dir, source, options):
  """The dataset's `Arrays`, from the cache in `<data_dir>/numpy/` or built.

  Args:
    dataset: 'cifar10', 'cifar100' or 'svhn'.
    data_dir: where the cache lives (`dataset.data_dir`).
    source: a folder of class subfolders, a tar archive of one, or an
      original CIFAR python archive.
    options: a `preparation.options.PrepareOptions`.

  Raises:
    DataError: a source it cannot read, with the fix.
  """
  if source not in (None, 'tfds'):
    source = os.path.abspath(os.path.expanduser(str(source)))
  directory = os.path.join(data_dir, CACHE_SUBDIR)
  with locking.DirectoryLock(directory, f'caching {dataset}', wait=True):
    if source not in (None, 'tfds'):
      cached = _load(directory, options_lib.arguments_record(
          dataset, source, options))
      if cached is not None:
        logging.info('Using the arrays cached in %s', directory)
        return cached
    data = build(dataset, source, options)
    _save(directory, data)
  logging.info('Decoded %s from %s in %.1f s; cached in %s', dataset, source,
               data.info['seconds'], directory)
  return data
