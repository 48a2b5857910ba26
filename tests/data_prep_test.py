"""Data preparation: end to end on real CIFAR-10 JPEGs, every source and error.

The subset (40 train + 10 test images per class of the real CIFAR-10 copy,
seeded) is prepared once per session (tests/data_fixtures.py). Each bad
input has its own test, which checks that the message names the file or
value and says what to do.
"""

import hashlib
import io
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from normprop_tf import data
from normprop_tf.data import schema
from normprop_tf.data import stats as stats_lib
from normprop_tf.data.preparation import preparer as prepare_lib
from normprop_tf.data.preparation import splits
from normprop_tf.data.preparation import tfds_source
pytest.register_assert_rewrite('tests.data_fixtures')
from tests.data_fixtures import (  # pylint: disable=g-import-not-at-top
    CLASSES, NUM_SHARDS, PER_CLASS, ROOT, SEED, VALIDATION_SIZE, write_tree)

pytest_plugins = ('tests.data_fixtures',)

DataError = data.DataError


def _pairs(images, labels):
  """Sorted (pixel digest, label) pairs: compares splits as multisets."""
  return sorted((hashlib.sha1(x.tobytes()).hexdigest(), int(y))
                for x, y in zip(images, labels))


def _copy(prepared_dir, tmp_path):
  dst = str(tmp_path / 'copy')
  shutil.copytree(prepared_dir, dst)
  return dst


def _small_tree(subset_members, per_class=2):
  """{name: bytes} with `per_class` images per class and split."""
  out, seen = {}, {}
  for name in sorted(subset_members):
    key = tuple(name.split('/')[:2])
    if seen.get(key, 0) < per_class:
      seen[key] = seen.get(key, 0) + 1
      out[name] = subset_members[name]
  return out


# ---- end to end -----------------------------------------------------------


def test_prepare_subset_end_to_end_counts_labels_and_pixels(
    prepared, reference):
  data_dir, summary = prepared
  n_train = PER_CLASS['train'] * 10
  assert not summary['skipped']
  assert summary['splits'] == {
      'train': {'num_examples': n_train - VALIDATION_SIZE,
                'num_shards': NUM_SHARDS},
      'validation': {'num_examples': VALIDATION_SIZE, 'num_shards': 1},
      'test': {'num_examples': PER_CLASS['test'] * 10, 'num_shards': 1},
  }
  names = sorted(n for n in os.listdir(data_dir) if n.endswith('.tfrecord'))
  assert names == [f'test-00000-of-00001.tfrecord'] + [
      f'train-{i:05d}-of-{NUM_SHARDS:05d}.tfrecord' for i in range(NUM_SHARDS)
  ] + ['validation-00000-of-00001.tfrecord']

  read = {s: data.read_split(data_dir, s) for s in ('train', 'validation',
                                                    'test')}
  # Every record is exactly one source JPEG (decoded by TF), with the label
  # of its class folder: train + validation == the train files, and the
  # validation holdout is disjoint from train.
  train_val = (np.concatenate([read['train'][0], read['validation'][0]]),
               np.concatenate([read['train'][1], read['validation'][1]]))
  assert _pairs(*train_val) == _pairs(*reference['train'])
  assert _pairs(*read['test']) == _pairs(*reference['test'])
  assert not set(_pairs(*read['train'])) & set(_pairs(*read['validation']))

  info = data.load_manifest(data_dir)
  assert info['class_names'] == list(CLASSES)
  assert info['image_shape'] == [32, 32, 3]
  for split, (_, labels) in read.items():
    assert info['splits'][split]['class_counts'] == np.bincount(
        labels, minlength=10).tolist()
  # Shards mix classes: written in a seeded random order.
  first = read['train'][1][:50]
  assert len(set(first.tolist())) >= 8
  assert info['stats']['num_examples'] == n_train - VALIDATION_SIZE
  assert info['stats']['zca_method'] == 'gram'


def test_statistics_are_those_of_the_training_split(prepared):
  data_dir, _ = prepared
  images, _ = data.read_split(data_dir, 'train')
  st = data.load_stats(data_dir)
  flat = images.reshape(len(images), -1).astype(np.float64)
  np.testing.assert_allclose(st.arrays['mean'], flat.mean(0), rtol=1e-12)
  np.testing.assert_allclose(st.arrays['std'], flat.std(0), rtol=1e-10)
  assert st.info['stats']['std_epsilon'] == 1e-3
  assert st.info['stats']['gcn_scale'] == 55.0
  assert st.info['stats']['zca_epsilon'] == 0.1


def test_folder_and_tar_of_the_same_images_give_identical_shards(
    prepared, subset_folder, tmp_path):
  # Records are serialized deterministically, so the shard digests (and the
  # fingerprint) depend only on the pixels, labels and arguments.
  summary = prepare_lib.prepare(
      'cifar10', str(tmp_path / 'from_folder'), source=subset_folder,
      num_shards=NUM_SHARDS, validation_size=VALIDATION_SIZE, seed=SEED,
      compute_zca=False)
  assert summary['fingerprint'] == prepared[1]['fingerprint']


def test_second_identical_run_is_fast_and_rewrites_nothing(
    prepared, subset_tar):
  data_dir, first = prepared
  # Every file but the lock, whose holder is rewritten by each writer.
  files = lambda: [n for n in os.listdir(data_dir) if n != '.lock']
  before = {n: os.stat(os.path.join(data_dir, n)) for n in files()}
  start = time.monotonic()
  summary = prepare_lib.prepare(
      'cifar10', data_dir, source=subset_tar, num_shards=NUM_SHARDS,
      validation_size=VALIDATION_SIZE, seed=SEED)
  seconds = time.monotonic() - start
  assert summary['skipped'] and summary['fingerprint'] == first['fingerprint']
  assert seconds < 5, seconds  # measured ~0.3 s (it hashes every shard)
  after = {n: os.stat(os.path.join(data_dir, n)) for n in files()}
  assert sorted(after) == sorted(before)
  for name, st in before.items():
    assert (after[name].st_mtime_ns, after[name].st_ino) == (
        st.st_mtime_ns, st.st_ino), name


def test_interrupted_run_never_looks_complete(prepared, subset_tar, tmp_path,
                                              monkeypatch):
  data_dir = _copy(prepared[0], tmp_path)
  calls = {'n': 0}
  original = schema.serialize_example

  def dies_midway(image, label):
    calls['n'] += 1
    if calls['n'] == 120:  # inside the second train shard
      raise KeyboardInterrupt
    return original(image, label)

  monkeypatch.setattr(schema, 'serialize_example', dies_midway)
  with pytest.raises(KeyboardInterrupt):
    prepare_lib.prepare('cifar10', data_dir, source=subset_tar, seed=1,
                        num_shards=NUM_SHARDS, validation_size=VALIDATION_SIZE,
                        overwrite=True)
  left = os.listdir(data_dir)
  # The old marker went first; the half-written shard was removed.
  assert 'stats.json' not in left and 'stats.npz' not in left
  assert not [n for n in left if '.tmp' in n], left
  assert 'train-00000-of-00004.tfrecord' in left  # one complete shard
  with pytest.raises(DataError, match='no completed preparation.*python -m '
                     'data_prep.prepare --dataset=DATASET'):
    data.make_dataset(data_dir, 'train', 8)
  monkeypatch.setattr(schema, 'serialize_example', original)
  summary = prepare_lib.prepare(
      'cifar10', data_dir, source=subset_tar, seed=1, num_shards=NUM_SHARDS,
      validation_size=VALIDATION_SIZE, compute_zca=False)
  assert not summary['skipped'] and summary['splits']['train'][
      'num_examples'] == 350


def test_other_arguments_need_overwrite(prepared, subset_tar, tmp_path):
  data_dir = _copy(prepared[0], tmp_path)
  with pytest.raises(DataError, match=r'seed: 0 -> 1.*--overwrite'):
    prepare_lib.prepare('cifar10', data_dir, source=subset_tar, seed=1,
                        num_shards=NUM_SHARDS, validation_size=VALIDATION_SIZE)


# ---- splits ---------------------------------------------------------------


def test_cifar_holdout_is_seeded_and_disjoint():
  a = splits.cifar_splits(50000, 5000, seed=0)
  b = splits.cifar_splits(50000, 5000, seed=0)
  c = splits.cifar_splits(50000, 5000, seed=1)
  (_, val), (_, train) = a['validation'][0], a['train'][0]
  assert len(val) == 5000 and len(train) == 45000
  assert not np.intersect1d(val, train).size
  np.testing.assert_array_equal(np.union1d(val, train), np.arange(50000))
  np.testing.assert_array_equal(val, b['validation'][0][1])
  assert np.intersect1d(val, c['validation'][0][1]).size < 1000  # ~500
  assert 'validation' not in splits.cifar_splits(100, 0, seed=0)
  with pytest.raises(DataError, match='--validation_size=100 must be in'):
    splits.cifar_splits(100, 100, seed=0)


def test_svhn_validation_protocol_400_train_200_extra_per_class():
  rng = np.random.default_rng(0)
  labels = {'train': rng.integers(0, 10, 7000), 'extra': rng.integers(
      0, 10, 4000), 'test': rng.integers(0, 10, 100)}
  parts = splits.svhn_splits(labels, seed=0)
  val = dict(parts['validation'])
  train = dict(parts['train'])
  for src, per_class in (('train', 400), ('extra', 200)):
    assert np.bincount(labels[src][val[src]]).tolist() == [per_class] * 10
    assert not np.intersect1d(val[src], train[src]).size
    assert len(val[src]) + len(train[src]) == len(labels[src])
  no_extra = splits.svhn_splits({'train': labels['train'],
                                 'test': labels['test']}, seed=0)
  assert [s for s, _ in no_extra['validation']] == ['train']
  assert len(no_extra['validation'][0][1]) == 4000
  with pytest.raises(DataError, match='class 3; the validation protocol '
                     'takes 400'):
    splits.svhn_splits({'train': np.where(labels['train'] == 3, 4,
                                          labels['train']),
                        'test': labels['test']}, seed=0)


# ---- other sources --------------------------------------------------------


def _cifar10_python_archive(path, reference, bad_label=False):
  """Writes a cifar-10-python.tar.gz in the original pickle format."""
  def blob(images, labels):
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return pickle.dumps({b'data': rows, b'labels': labels.tolist()})
  x, y = reference['train']
  y = y.copy()
  if bad_label:
    y[7] = 10
  files = {f'cifar-10-batches-py/data_batch_{i + 1}': blob(xs, ys)
           for i, (xs, ys) in enumerate(zip(np.array_split(x, 5),
                                            np.array_split(y, 5)))}
  files['cifar-10-batches-py/test_batch'] = blob(*reference['test'])
  files['cifar-10-batches-py/batches.meta'] = pickle.dumps(
      {b'label_names': [c.encode() for c in CLASSES]})
  with tarfile.open(path, 'w:gz') as tar:
    for name, content in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(content)
      tar.addfile(info, io.BytesIO(content))
  return str(path)


def test_original_cifar_python_archive(reference, tmp_path):
  archive = _cifar10_python_archive(tmp_path / 'cifar-10-python.tar.gz',
                                    reference)
  data_dir = str(tmp_path / 'out')
  summary = prepare_lib.prepare('cifar10', data_dir, source=archive,
                                validation_size=0, compute_zca=False)
  assert set(summary['splits']) == {'train', 'test'}
  for split in ('train', 'test'):
    assert _pairs(*data.read_split(data_dir, split)) == _pairs(
        *reference[split])
  assert data.load_manifest(data_dir)['class_names'] == list(CLASSES)
  with pytest.raises(DataError, match='is the cifar10 archive, but '
                     '--dataset=cifar100'):
    prepare_lib.prepare('cifar100', str(tmp_path / 'c100'), source=archive)


def test_tfds_source_under_mock_data(tmp_path, monkeypatch):
  # A connected machine: the reachability probe passes, and mock_data makes
  # download_and_prepare a no-op and as_dataset generate examples from the
  # builder's own feature spec.
  monkeypatch.setattr(tfds_source, 'check_reachable', lambda *a, **k: None)
  data_dir = str(tmp_path / 'tfds_out')
  with tfds.testing.mock_data(num_examples=40,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    summary = prepare_lib.prepare(
        'cifar10', data_dir, source='tfds', validation_size=10,
        tfds_data_dir=str(tmp_path / 'tfds'), compute_zca=False)
  assert {s: v['num_examples'] for s, v in summary['splits'].items()} == {
      'train': 30, 'validation': 10, 'test': 40}
  images, labels = data.read_split(data_dir, 'test')
  assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8
  assert labels.min() >= 0 and labels.max() < 10
  info = data.load_manifest(data_dir)
  assert len(info['class_names']) == 10  # mock: '0'..'9', no metadata
  assert info['prepare_args']['source_fingerprint'].startswith('tfds:cifar10')


# ---- bad input: one test per case ------------------------------------------


def test_error_missing_shard(prepared, tmp_path):
  data_dir = _copy(prepared[0], tmp_path)
  os.remove(os.path.join(data_dir, 'train-00001-of-00004.tfrecord'))
  with pytest.raises(DataError, match=r'Missing shard .*train-00001-of-00004'
                     r'\.tfrecord.*python -m data_prep.prepare '
                     r'--dataset=cifar10 --source=.*--overwrite'):
    data.make_dataset(data_dir, 'train', 8)


def test_error_corrupt_shard(prepared, tmp_path):
  data_dir = _copy(prepared[0], tmp_path)
  path = os.path.join(data_dir, 'train-00002-of-00004.tfrecord')
  with open(path, 'r+b') as f:  # same size, one byte changed
    f.seek(5000)
    byte = f.read(1)
    f.seek(5000)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(DataError, match=r'Corrupt shard .*train-00002-of-00004'
                     r'.*sha256.*--overwrite'):
    data.make_dataset(data_dir, 'train', 8)
  with open(path, 'r+b') as f:
    f.truncate(1000)
  with pytest.raises(DataError, match=r'Corrupt shard .*train-00002.*1000 '
                     r'bytes'):
    data.make_dataset(data_dir, 'train', 8, verify='size')


def test_error_stats_fingerprint_mismatch(prepared, tmp_path):
  data_dir = _copy(prepared[0], tmp_path)
  # stats.npz from another run: its fingerprint differs from stats.json's.
  st = data.load_stats(data_dir)
  stats_lib.save_npz(os.path.join(data_dir, 'stats.npz'), st.arrays,
                     'f' * 64)
  with pytest.raises(DataError, match=r'fingerprint mismatch.*stats.npz was '
                     r'computed for shards with fingerprint ffffffffffff'):
    data.make_dataset(data_dir, 'train', 8)
  # A shard that stats.json does not describe lies beside the others.
  data_dir = _copy(prepared[0], tmp_path / 'b')
  shutil.copy(os.path.join(data_dir, 'train-00000-of-00004.tfrecord'),
              os.path.join(data_dir, 'train-00000-of-00002.tfrecord'))
  with pytest.raises(DataError, match=r'fingerprint mismatch.*'
                     r'train-00000-of-00002\.tfrecord are not part'):
    data.make_dataset(data_dir, 'train', 8)


def test_error_empty_source_folder(tmp_path):
  os.makedirs(tmp_path / 'empty' / 'train' / 'cat')
  with pytest.raises(DataError, match=r'empty holds no images.*train/<class>'):
    prepare_lib.prepare('cifar10', str(tmp_path / 'out'),
                        source=str(tmp_path / 'empty'))
  assert not os.path.exists(tmp_path / 'out' / 'stats.json')


@pytest.mark.parametrize('case', ['no_train_dir', 'file_outside_class',
                                  'unknown_test_class', 'missing_classes'])
def test_error_malformed_source_folder(subset_members, tmp_path, case):
  tree = _small_tree(subset_members)
  some = tree['train/cat/' + min(n.split('/')[2] for n in tree
                                 if n.startswith('train/cat/'))]
  if case == 'no_train_dir':
    tree = {n.replace('train/', 'training/'): v for n, v in tree.items()}
    match = r'no train/ folder'
  elif case == 'file_outside_class':
    tree['train/stray.jpg'] = some
    match = r'train/stray.jpg is not at <split>/<class>/<image>'
  elif case == 'unknown_test_class':
    tree['test/kitten/0001.jpg'] = some
    match = r'class folder\(s\) kitten of test/ do not exist in train/'
  else:
    tree = {n: v for n, v in tree.items() if '/dog/' not in n}
    match = r'has 9 class folders in train/.*cifar10 needs 10'
  source = write_tree(tmp_path / 'src', tree)
  with pytest.raises(DataError, match=match):
    prepare_lib.prepare('cifar10', str(tmp_path / 'out'), source=source)


def test_error_wrong_image_shape(subset_members, tmp_path):
  tree = _small_tree(subset_members)
  tree['train/cat/9999.png'] = tf.io.encode_png(
      np.zeros((28, 28, 1), np.uint8)).numpy()
  source = write_tree(tmp_path / 'src', tree)
  with pytest.raises(DataError, match=r'train/cat/9999.png has shape '
                     r'\(28, 28, 1\); expected \(32, 32, 3\)'):
    prepare_lib.prepare('cifar10', str(tmp_path / 'out'), source=source)


def test_error_undecodable_image(subset_members, tmp_path):
  tree = _small_tree(subset_members)
  tree['test/dog/0000.jpg'] = b'not a jpeg at all'
  source = write_tree(tmp_path / 'src', tree)
  with pytest.raises(DataError, match=r'test/dog/0000.jpg is not a decodable '
                     r'image.*Replace or delete it'):
    prepare_lib.prepare('cifar10', str(tmp_path / 'out'), source=source)


def test_error_labels_out_of_range(subset_members, reference, tmp_path):
  tree = _small_tree(subset_members)
  tree.update({n.replace('/cat/', '/zebra/'): v for n, v in tree.items()
               if '/cat/' in n})
  source = write_tree(tmp_path / 'src', tree)
  with pytest.raises(DataError, match=r"11 class folders.*'zebra' would get "
                     r'label 10, out of range for cifar10'):
    prepare_lib.prepare('cifar10', str(tmp_path / 'out'), source=source)
  archive = _cifar10_python_archive(tmp_path / 'cifar-10-python.tar.gz',
                                    reference, bad_label=True)
  with pytest.raises(DataError, match=r'Label 10 \(example 7\).*out of range '
                     r'\[0, 10\)'):
    prepare_lib.prepare('cifar10', str(tmp_path / 'out2'), source=archive)


def test_error_unknown_dataset_name(prepared, tmp_path):
  with pytest.raises(DataError, match=r"Unknown dataset 'cifar11'. Choose one "
                     r'of: cifar10, cifar100, svhn'):
    prepare_lib.prepare('cifar11', str(tmp_path / 'out'))
  with pytest.raises(DataError, match=r"Unknown dataset 'mnist'"):
    data.load_stats(prepared[0], dataset='mnist')
  with pytest.raises(DataError, match=r"holds dataset 'cifar10', not 'svhn'"):
    data.load_stats(prepared[0], dataset='svhn')


def test_error_tfds_unreachable_fails_fast(tmp_path, monkeypatch):
  def offline(address, timeout=None, **kwargs):
    del timeout, kwargs
    raise socket.gaierror(-2, f'Name or service not known: {address[0]}')

  monkeypatch.setattr(socket, 'create_connection', offline)
  start = time.monotonic()
  with pytest.raises(DataError, match=r'TFDS cannot download cifar10: '
                     r'www.cs.toronto.edu:443 is unreachable.*--source='):
    prepare_lib.prepare('cifar10', str(tmp_path / 'out'), source='tfds',
                        tfds_data_dir=str(tmp_path / 'tfds'))
  assert time.monotonic() - start < 10


def test_error_missing_dataset_names_the_prepare_command(tmp_path):
  data_dir = str(tmp_path / 'cifar10')
  with pytest.raises(DataError) as err:
    data.make_dataset(data_dir, 'train', 128)
  assert f'python -m data_prep.prepare --dataset=cifar10 --data_dir={data_dir}'\
      in str(err.value)
  with pytest.raises(DataError, match=r'--dataset=svhn --data_dir=.*/x'):
    data.load_stats(str(tmp_path / 'x'), dataset='svhn')


# ---- command line ---------------------------------------------------------


def _run_cli(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-m', 'data_prep.prepare', *args],
                        cwd=ROOT, capture_output=True, text=True, env=env,
                        timeout=120, check=False)


def test_cli_help_lists_every_flag():
  result = _run_cli('--help')
  # absl's --help prints the usage to stdout and exits with status 1.
  assert result.returncode in (0, 1), result.stderr
  assert 'Prepares CIFAR-10, CIFAR-100 or SVHN' in result.stdout
  for flag in ('--dataset', '--data_dir', '--source', '--num_shards',
               '--validation_size', '--seed', '--[no]svhn_use_extra',
               '--[no]overwrite', '--tfds_data_dir', '--[no]zca'):
    assert flag in result.stdout, flag


def test_cli_error_exits_nonzero_without_traceback(tmp_path):
  result = _run_cli('--dataset=cifar11', f'--data_dir={tmp_path}')
  assert result.returncode == 1
  assert "error: Unknown dataset 'cifar11'" in result.stderr
  assert 'Traceback' not in result.stderr


def test_svhn_folder_source_with_and_without_extra(subset_members, tmp_path,
                                                   monkeypatch):
  # CIFAR images stand in for digits; the protocol is scaled down from
  # 400 + 200 to 2 + 1 validation images per class.
  monkeypatch.setattr(splits, 'SVHN_VALIDATION_PER_CLASS',
                      {'train': 2, 'extra': 1})
  tree = {}
  for name, content in _small_tree(subset_members, per_class=4).items():
    split, cls, file = name.split('/')
    digit = str(CLASSES.index(cls))
    tree[f'{split}/{digit}/{file}'] = content
    if split == 'train':
      tree[f'extra/{digit}/{file}'] = content
  source = write_tree(tmp_path / 'svhn', tree)
  summary = prepare_lib.prepare('svhn', str(tmp_path / 'out'), source=source,
                                compute_zca=False)
  counts = {s: v['num_examples'] for s, v in summary['splits'].items()}
  assert counts == {'train': 40 + 40 - 30, 'validation': 30, 'test': 40}
  images, labels = data.read_split(str(tmp_path / 'out'), 'validation')
  assert np.bincount(labels).tolist() == [3] * 10
  summary = prepare_lib.prepare('svhn', str(tmp_path / 'out2'), source=source,
                                svhn_use_extra=False, compute_zca=False)
  counts = {s: v['num_examples'] for s, v in summary['splits'].items()}
  assert counts == {'train': 20, 'validation': 20, 'test': 40}
