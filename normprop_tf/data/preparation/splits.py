"""Seeded train/validation/test splits.

- CIFAR-10/100: `validation_size` examples (default 5,000) drawn uniformly
  at random from train, without replacement, under `seed`. 0 means no
  validation split.
- SVHN: 400 per class from train plus 200 per class from extra form the
  validation split (Goodfellow et al. 2013, Sermanet et al. 2012); the rest
  of train and extra is the training split. Without extra: 400 per class
  from train only.

`assemble` then permutes every split under the seed before it is written,
so that each shard mixes all classes (class-folder sources arrive sorted).
"""

import zlib

import numpy as np

from normprop_tf.data import spec
from normprop_tf.data.errors import DataError

SVHN_VALIDATION_PER_CLASS = {'train': 400, 'extra': 200}


def cifar_splits(num_train, validation_size, seed):
  """{split: [(source split, indices), ...]} for CIFAR."""
  if not 0 <= validation_size < num_train:
    raise DataError(
        f'--validation_size={validation_size} must be in [0, {num_train}) '
        f'for a training split of {num_train} examples.')
  perm = np.random.default_rng([seed, 1]).permutation(num_train)
  out = {'train': [('train', np.sort(perm[validation_size:]))],
         'test': [('test', None)]}
  if validation_size:
    out['validation'] = [('train', np.sort(perm[:validation_size]))]
  return out


def svhn_splits(labels, seed, num_classes=10, per_class=None):
  """{split: [(source split, indices), ...]} for the SVHN protocol.

  Args:
    labels: {'train': int array, 'test': ..., and optionally 'extra': ...}.
    seed: the selection seed.
    num_classes: 10.
    per_class: {source split: validation examples per class}; default
      {'train': 400, 'extra': 200}.
  """
  per_class = dict(per_class or SVHN_VALIDATION_PER_CLASS)
  rng = np.random.default_rng([seed, 2])
  out = {'train': [], 'validation': [], 'test': [('test', None)]}
  for source in ('train', 'extra'):
    if source not in labels:
      continue
    y = np.asarray(labels[source])
    chosen = []
    for c in range(num_classes):
      members = np.flatnonzero(y == c)
      if len(members) < per_class[source]:
        raise DataError(
            f'SVHN {source} has {len(members)} examples of class {c}; the '
            f'validation protocol takes {per_class[source]} per class. Check '
            'the source, or pass --svhn_use_extra=false if extra is partial.')
      chosen.append(rng.choice(members, per_class[source], replace=False))
    chosen = np.sort(np.concatenate(chosen))
    out['validation'].append((source, chosen))
    out['train'].append((source, np.setdiff1d(np.arange(len(y)), chosen)))
  return out


def assemble(arrays, parts, seed, split):
  """Gathers one split from the source arrays and permutes it under `seed`.

  Args:
    arrays: {source split: (images, labels)}.
    parts: [(source split, indices or None for all), ...].
    seed: the permutation seed.
    split: the split's name (mixed into the seed).

  Returns:
    (images, labels) of the split, in a seeded random order.
  """
  images = [arrays[s][0] if i is None else arrays[s][0][i] for s, i in parts]
  labels = [arrays[s][1] if i is None else arrays[s][1][i] for s, i in parts]
  images = images[0] if len(images) == 1 else np.concatenate(images)
  labels = labels[0] if len(labels) == 1 else np.concatenate(labels)
  rng = np.random.default_rng([seed, 3, zlib.crc32(split.encode())])
  perm = rng.permutation(len(labels))
  return images[perm], labels[perm]


def split_parts(dataset, raw_splits, validation_size, seed):
  """{split: [(source split, indices), ...]} of a dataset's protocol.

  Args:
    dataset: 'cifar10', 'cifar100' or 'svhn'.
    raw_splits: {source split: (images, labels)} as loaded from the source.
    validation_size: CIFAR validation holdout.
    seed: the selection seed.
  """
  if dataset == 'svhn':
    return svhn_splits({k: v[1] for k, v in raw_splits.items()}, seed,
                       spec.DATASETS[dataset]['num_classes'])
  return cifar_splits(len(raw_splits['train'][1]), int(validation_size), seed)
