"""make_dataset: statistics of the output, determinism, ops eager vs map,
augmentation, and input sharding for tf.distribute.

Runs on the real CIFAR-10 subset prepared once per session
(tests/data_fixtures.py): 350 train, 50 validation, 100 test images.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from normprop_tf import data
from normprop_tf.data import augment
from normprop_tf.data import preprocessing
pytest.register_assert_rewrite('tests.data_fixtures')
from tests.data_fixtures import ROOT  # pylint: disable=g-import-not-at-top

pytest_plugins = ('tests.data_fixtures',)


def _all(ds):
  xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
  return np.concatenate(xs), np.concatenate(ys)


def _epoch(data_dir, split='train', **kwargs):
  kwargs = {'training': False,
            **kwargs}
  return _all(data.make_dataset(data_dir, split, 64, **kwargs))


@pytest.fixture(scope='module')
def raw_train(prepared):
  return data.read_split(prepared[0], 'train')


# ---- output statistics ----------------------------------------------------


@pytest.mark.parametrize('preprocessing_', ['standardize', 'zca'])
def test_train_dims_have_zero_mean_and_unit_std(prepared, preprocessing_):
  x, _ = _epoch(prepared[0], preprocessing=preprocessing_)
  flat = x.reshape(len(x), -1).astype(np.float64)
  assert flat.shape == (350, 3072)
  assert np.abs(flat.mean(axis=0)).max() < 1e-3
  assert np.abs(flat.std(axis=0) - 1).max() < 1e-2


def test_standardize_matches_numpy_on_test_split(prepared):
  x, _ = _epoch(prepared[0], 'test', preprocessing='standardize')
  raw, _ = data.read_split(prepared[0], 'test')
  st = data.load_stats(prepared[0])
  expected = (raw.reshape(len(raw), -1) - st.arrays['mean']) / (
      st.arrays['std'] + 1e-3)
  np.testing.assert_allclose(x.reshape(len(x), -1), expected, atol=1e-5)


def test_minibatch_standardizes_each_batch(prepared):
  ds = data.make_dataset(prepared[0], 'train', 64, preprocessing='minibatch',
                         seed=0)
  for x, _ in ds.take(3):
    flat = x.numpy().reshape(64, -1).astype(np.float64)
    assert np.abs(flat.mean(axis=0)).max() < 1e-4
    # std / (std + 1e-3) with pixel std >= ~20 within a batch of 64.
    assert np.abs(flat.std(axis=0) - 1).max() < 1e-3


def test_none_is_pixels_over_255(prepared, raw_train):
  x, y = _epoch(prepared[0], preprocessing='none')
  np.testing.assert_array_equal(x, raw_train[0].astype(np.float32) / 255.0)
  np.testing.assert_array_equal(y, raw_train[1])


def test_element_spec_and_static_train_batch(prepared):
  ds = data.make_dataset(prepared[0], 'train', 32)
  assert ds.element_spec == (
      tf.TensorSpec((32, 32, 32, 3), tf.float32),
      tf.TensorSpec((32,), tf.int32))
  ev = data.make_dataset(prepared[0], 'test', 32)
  assert ev.element_spec[0].shape.as_list() == [None, 32, 32, 3]
  assert sum(len(y) for _, y in ev) == 100  # no repeat, keeps remainder


def test_argument_errors(prepared):
  with pytest.raises(ValueError, match="Received: preprocessing='pca'"):
    data.make_dataset(prepared[0], 'train', 8, preprocessing='pca')
  with pytest.raises(ValueError, match='Received: global_batch_size=0'):
    data.make_dataset(prepared[0], 'train', 0)
  with pytest.raises(data.DataError, match="Split 'extra' is not in"):
    data.make_dataset(prepared[0], 'extra', 8)


# ---- every op: eagerly == inside Dataset.map ------------------------------


@pytest.fixture(scope='module')
def ops(prepared):
  st = data.load_stats(prepared[0])
  mean, denominator = (tf.constant(a) for a in st.standardize_params())
  scale, kernel, bias = st.zca_params()
  kernel, bias = tf.constant(kernel), tf.constant(bias)
  seed = tf.constant([3, 4], tf.int64)
  return {
      'scale01': preprocessing.scale01,
      'standardize': lambda x: preprocessing.standardize(x, mean,
                                                         denominator),
      'gcn': lambda x: preprocessing.gcn(
          tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])),
      'zca': lambda x: preprocessing.zca(x, scale, kernel, bias),
      'minibatch': preprocessing.minibatch_standardize,
      'augment_uint8': lambda x: augment.augment_batch(x, seed),
      'augment_float': lambda x: augment.augment_batch(
          preprocessing.standardize(x, mean, denominator), seed),
  }


@pytest.mark.parametrize('name', ['scale01', 'standardize', 'gcn', 'zca',
                                  'minibatch', 'augment_uint8',
                                  'augment_float'])
def test_op_eager_equals_dataset_map(ops, raw_train, name):
  batch = tf.constant(raw_train[0][:64])
  eager = ops[name](batch).numpy()
  mapped = next(iter(tf.data.Dataset.from_tensors(batch).map(
      ops[name]))).numpy()
  assert eager.dtype == mapped.dtype
  # Elementwise ops and gathers are bit-identical. The length-3072 float32
  # dot products of 'zca' (outputs up to ~10) are accumulated in another
  # order inside the graph (grappler fuses matmul + bias): measured max
  # difference 3.3e-5, so rtol 1e-5 + atol 1e-4.
  tol = {'rtol': 1e-5, 'atol': 1e-4} if name == 'zca' else {'rtol': 0,
                                                            'atol': 0}
  np.testing.assert_allclose(mapped, eager, **tol)


# ---- augmentation ---------------------------------------------------------


def test_augment_is_a_padded_crop_with_optional_flip(raw_train):
  x = raw_train[0][:16].astype(np.int32) + 1  # distinguish padding from 0
  padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
  out = augment.augment_batch(tf.constant(x), [0, 7]).numpy()
  for i in range(len(x)):
    hits = [(dy, dx, flip) for dy in range(9) for dx in range(9)
            for flip in (False, True)
            if np.array_equal(out[i], (lambda w: w[:, ::-1] if flip else w)(
                padded[i, dy:dy + 32, dx:dx + 32]))]
    assert hits, f'image {i} is not a flipped/unflipped window'


def test_augment_offsets_cover_all_81_and_flip_half():
  # Each image is a distinct index ramp, so the crop offset and the flip are
  # read off its top-left output pixel.
  n = 4000
  x = np.broadcast_to(np.arange(32 * 32, dtype=np.int32).reshape(
      1, 32, 32, 1) + 1, (n, 32, 32, 1))
  out = augment.augment_batch(tf.constant(x), [5, 6]).numpy()
  offsets, flips = set(), 0
  for img in out:
    # out[16, 16] is x[dy + 12, dx + 12], or x[dy + 12, dx + 11] if flipped.
    row, col = divmod(int(img[16, 16, 0]) - 1, 32)
    flipped = img[16, 17, 0] < img[16, 16, 0]
    flips += flipped
    offsets.add((row - 12, col - (11 if flipped else 12)))
  assert len(offsets) == 81 and all(0 <= a <= 8 and 0 <= b <= 8
                                    for a, b in offsets)
  assert abs(flips / n - 0.5) < 0.05  # binomial sd 0.008


# ---- determinism ----------------------------------------------------------


def _first(data_dir, seed, n=8, **kwargs):
  ds = data.make_dataset(data_dir, 'train', 32, augment=True, seed=seed,
                         **kwargs)
  return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_same_seed_same_batches_different_seed_different(prepared):
  a = _first(prepared[0], 1)
  b = _first(prepared[0], 1)
  c = _first(prepared[0], 2)
  for (xa, ya), (xb, yb) in zip(a, b):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
  assert not np.array_equal(np.concatenate([y for _, y in a]),
                            np.concatenate([y for _, y in c]))
  assert not np.array_equal(a[0][0], c[0][0])
  # Batches run across epochs (repeat, then batch): the first 350 labels
  # are one epoch, a permutation of the split; the next epoch is reshuffled.
  ya = np.concatenate([y for _, y in _first(prepared[0], 1, n=22)])
  train_labels = data.read_split(prepared[0], 'train')[1]
  np.testing.assert_array_equal(np.sort(ya[:350]), np.sort(train_labels))
  assert not np.array_equal(ya[:350], ya[350:700])


def test_determinism_does_not_depend_on_cache(prepared):
  a = _first(prepared[0], 3, n=4, cache=True)
  b = _first(prepared[0], 3, n=4, cache=False)
  for (xa, ya), (xb, yb) in zip(a, b):
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_allclose(xa, xb, atol=0)


def test_eval_split_keeps_file_order(prepared):
  _, y = _epoch(prepared[0], 'test')
  np.testing.assert_array_equal(y, data.read_split(prepared[0], 'test')[1])


# ---- tf.distribute --------------------------------------------------------


@pytest.mark.parametrize('split,by', [('train', 'files'),
                                      ('test', 'examples')])
def test_input_context_gives_per_replica_batch_and_disjoint_shards(
    prepared, split, by):
  del by  # train has 4 shards (split by file); test has 1 (by example).
  parts = []
  for i in range(2):
    ctx = tf.distribute.InputContext(num_input_pipelines=2,
                                     input_pipeline_id=i,
                                     num_replicas_in_sync=2)
    ds = data.make_dataset(prepared[0], split, 32, input_context=ctx,
                           training=False,
                           preprocessing='none')
    batches = [(x.numpy(), y.numpy()) for x, y in ds]
    assert max(len(y) for _, y in batches) == 16  # 32 / 2 replicas
    parts.append(np.concatenate([x for x, _ in batches]))
  whole = data.read_split(prepared[0], split)[0].astype(np.float32) / 255.0
  key = lambda a: {r.tobytes() for r in a}
  assert not key(parts[0]) & key(parts[1])
  assert key(parts[0]) | key(parts[1]) == key(whole)


_SCRIPT = textwrap.dedent('''
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from normprop_tf import data
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    contexts = []
    def dataset_fn(ctx):
      contexts.append([ctx.num_input_pipelines, ctx.input_pipeline_id,
                       ctx.num_replicas_in_sync])
      return data.make_dataset(sys.argv[1], 'train', 32, input_context=ctx,
                               augment=True)
    dist = strategy.distribute_datasets_from_function(dataset_fn)
    x, y = next(iter(dist))
    xs = strategy.experimental_local_results(x)
    ys = strategy.experimental_local_results(y)
    print(json.dumps({
        'contexts': contexts,
        'replicas': strategy.num_replicas_in_sync,
        'shapes': [list(t.shape) for t in xs],
        'label_shapes': [list(t.shape) for t in ys],
        'same': bool(tf.reduce_all(xs[0] == xs[1])),
    }))
''')


def test_distribute_datasets_from_function_two_replicas(prepared):
  # Logical devices must be set before TF initializes: run in a subprocess.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
      [sys.executable, '-c', _SCRIPT, prepared[0]], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=180, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['replicas'] == 2
  assert out['contexts'] == [[1, 0, 2]]  # one worker: one input pipeline
  assert out['shapes'] == [[16, 32, 32, 3]] * 2
  assert out['label_shapes'] == [[16]] * 2
  assert not out['same']
