"""Shared fixtures of the data tests: a seeded subset of the real CIFAR-10.

`../shared/data/cifar10-jpg.tar.gz` (the real 60k CIFAR-10 as JPEG) is read
once per test session. A seeded subset of it (40 train and 10 test images
per class) is written into a temporary directory, both as a folder and as a
.tar.gz, and prepared once with validation_size=50. Nothing extracted from
the tarball is ever written inside the repository.

Load the fixtures in a test module with
`pytest_plugins = ('tests.data_fixtures',)`: as a plugin, the session
fixtures run once per session (per xdist worker), not once per module.
"""

import io
import os
import pathlib
import tarfile

import numpy as np
import PIL.Image
import pytest

from normprop_tf.data import stats as stats_lib
from normprop_tf.data.preparation import preparer as prepare_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
TARBALL = ROOT.parent / 'shared' / 'data' / 'cifar10-jpg.tar.gz'
CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
           'horse', 'ship', 'truck')
PER_CLASS = {'train': 40, 'test': 10}
VALIDATION_SIZE = 50
NUM_SHARDS = 4
SEED = 0

def write_tree(root, members):
  """Writes {relative path: bytes} under `root`; returns `root` as str."""
  for name, data in members.items():
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(data)
  return str(root)


def decode(data):
  """Pillow's decode: the prepared records must hold exactly these pixels."""
  return np.asarray(PIL.Image.open(io.BytesIO(data)).convert('RGB'))


@pytest.fixture(scope='session')
def subset_members():
  """{'train/<class>/NNNN.jpg': bytes, ...}: seeded 40 + 10 per class."""
  if not TARBALL.is_file():
    # A failure, not a skip: these tests are the real-data coverage.
    pytest.fail(f'{TARBALL} not found: the real CIFAR-10 copy must sit at '
                '../shared/data/ beside the project (README.md, "Tests").')
  by_dir = {}
  with tarfile.open(TARBALL, 'r:gz') as tar:
    for member in tar:
      if member.isfile():
        split, cls, _ = member.name.split('/')
        by_dir.setdefault((split, cls), []).append(
            (member.name, tar.extractfile(member).read()))
  rng = np.random.default_rng(SEED)
  out = {}
  for (split, cls), files in sorted(by_dir.items()):
    files.sort()
    for i in sorted(rng.choice(len(files), PER_CLASS[split], replace=False)):
      out[files[i][0]] = files[i][1]
  return out


@pytest.fixture(scope='session')
def subset_folder(subset_members, tmp_path_factory):
  return write_tree(tmp_path_factory.mktemp('cifar_folder'), subset_members)


@pytest.fixture(scope='session')
def subset_tar(subset_members, tmp_path_factory):
  path = tmp_path_factory.mktemp('cifar_tar') / 'subset.tar.gz'
  with tarfile.open(path, 'w:gz') as tar:
    for name, data in sorted(subset_members.items()):
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return str(path)


@pytest.fixture(scope='session')
def prepared(subset_tar, tmp_path_factory):
  """(data_dir, summary) of the subset, prepared once from the .tar.gz."""
  data_dir = str(tmp_path_factory.mktemp('prepared') / 'cifar10')
  summary = prepare_lib.prepare(
      'cifar10', data_dir, source=subset_tar, num_shards=NUM_SHARDS,
      validation_size=VALIDATION_SIZE, seed=SEED)
  return data_dir, summary


@pytest.fixture(scope='session')
def reference(subset_members):
  """{split: (uint8 images, int64 labels)} decoded straight from the files."""
  out = {}
  for split in PER_CLASS:
    names = sorted(n for n in subset_members if n.startswith(split + '/'))
    out[split] = (np.stack([decode(subset_members[n]) for n in names]),
                  np.array([CLASSES.index(n.split('/')[1]) for n in names]))
  return out


def fixture_bindings(data_dir):
  """Gin bindings that point a run at the `prepared` fixture as it is.

  A data_dir is reused only with the arguments it was prepared with, so a
  config with other preparation settings (smoke.gin's subset, the default
  validation size) is told the fixture's.
  """
  return [f"dataset.data_dir = '{data_dir}'",
          f'dataset.validation_size = {VALIDATION_SIZE}',
          'dataset.subset_per_class = None', "dataset.jpeg_idct = 'accurate'",
          f'dataset.zca_epsilon = {stats_lib.ZCA_EPSILON}']
