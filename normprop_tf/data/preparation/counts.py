"""What a complete source holds: images per split and class, checked.

A truncated archive still decodes: a `.tar` cut at a file boundary gave 36
of 100 test images and five empty classes, with exit status 0. So every
source is checked against the dataset's known sizes:

- the full dataset (CIFAR-10: 5,000 train and 1,000 test images per class;
  CIFAR-100: 500 and 100; SVHN: 73,257 train, 26,032 test and 531,131 extra
  images in all) passes;
- with `subset_per_class`, every class must have exactly
  min(N, its full count) images;
- any other source (a smaller copy) must be balanced for CIFAR (every class
  of a split equally many, none empty) and have no empty class for SVHN; it
  passes with a warning that it is not the full dataset.
"""

from absl import logging
import numpy as np

from normprop_tf.data import spec
from normprop_tf.data.errors import DataError

PER_CLASS = {'cifar10': {'train': 5000, 'test': 1000},
             'cifar100': {'train': 500, 'test': 100}}
TOTALS = {'svhn': {'train': 73257, 'test': 26032, 'extra': 531131}}


def check_counts(dataset, raw_splits, limits, source):
  """Raises DataError when a split's class counts cannot be a whole source.

  Args:
    dataset: 'cifar10', 'cifar100' or 'svhn'.
    raw_splits: {source split: (images, labels)} as loaded.
    limits: {split: N} of a requested subset, or None.
    source: for the message.
  """
  num_classes = spec.DATASETS[dataset]['num_classes']
  partial = []
  for split, (_, labels) in sorted(raw_splits.items()):
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    full = PER_CLASS.get(dataset, {}).get(split)
    if limits and split in limits and full:
      want = min(limits[split], full)
      if np.any(counts != want):
        raise _error(source, split, counts, f'{want} per class (the subset '
                     f'of {limits[split]} per class)')
      continue
    if full is not None:
      if np.all(counts == full):
        continue
      if counts.min() == 0 or counts.min() != counts.max():
        raise _error(source, split, counts, f'{full} per class, or the same '
                     'number in every class for a smaller copy')
    elif dataset in TOTALS:
      if counts.sum() == TOTALS[dataset].get(split):
        continue
      if counts.min() == 0:
        raise _error(source, split, counts, 'every class present')
    partial.append(f'{split} {int(counts.sum())}')
  if partial:
    logging.warning('%s is not the full %s (%s images): a smaller copy.',
                    source, dataset, ', '.join(partial))


def _error(source, split, counts, expected):
  low = int(np.argmin(counts))
  return DataError(
      f'{source}: {split}/ holds {int(counts.sum())} images, '
      f'{int(counts.min())} to {int(counts.max())} per class (class {low} '
      f'has {int(counts[low])}; {int(np.sum(counts == 0))} classes empty); '
      f'expected {expected}. The source looks truncated: fetch it again.')
