"""The tf.data input pipeline over the prepared TFRecords.

    files (sorted; sharded per input pipeline; shuffled under the seed)
    -> TFRecordDataset (interleaving 4 files when shuffling; else in order)
    -> batch 1024 -> parse_example + decode_raw -> per-image preprocessing
    -> cache                      # everything above is deterministic
    -> unbatch -> shuffle (seeded) -> repeat -> batch (per-replica size)
    -> augment (stateless, seed folded with the batch index)
    -> 'minibatch' standardization (needs the final batch)
    -> shard_by='batches' only: this pipeline's slice of each global batch,
       one per-replica batch per local replica
    -> prefetch

Elements are (float32 images [B, H, W, C], int32 labels [B]).

Determinism: with a fixed `seed`, the file order, the shuffle and the
augmentation are reproducible across runs of the same TF version. The
shuffle's op-level seed combines with TF's global seed, so a different
`tf.random.set_seed` / `keras.utils.set_random_seed` also changes the order.
"""

import numpy as np
import tensorflow as tf

from normprop_tf.data import augment as augment_lib
from normprop_tf.data import manifest
from normprop_tf.data import preprocessing as prep
from normprop_tf.data import schema
from normprop_tf.data import stats as stats_lib

_PARSE_BATCH = 1024
AUTOTUNE = tf.data.AUTOTUNE


def _positive_int(name, value):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
      value <= 0):
    raise ValueError(f'`{name}` must be a positive integer. '
                     f'Received: {name}={value!r}')
  return int(value)


def _seeds(seed, pipeline_id):
  """Independent (file, example, augment) seeds per input pipeline."""
  state = np.random.SeedSequence([int(seed), int(pipeline_id)])
  state = state.generate_state(3)
  return [int(s) & 0x7FFFFFFF for s in state]


def _parse_fn(image_shape, per_image):
  def parse(serialized):
    images, labels = schema.parse_batch(serialized, image_shape)
    if per_image is not None:
      images = per_image(images)
    return images, tf.cast(labels, tf.int32)
  return parse


def make_dataset(data_dir, split, global_batch_size,
                 preprocessing='standardize', augment=False, shuffle=None,
                 seed=0, drop_remainder=None, input_context=None, repeat=None,
                 cache=True, dataset=None, verify='full',
                 shuffle_buffer_size=16384, shard_by='files'):
  """Builds the input pipeline for one split of a prepared data_dir.

  Args:
    data_dir: directory written by `python -m data_prep.prepare`.
    split: 'train', 'validation' or 'test'.
    global_batch_size: batch size summed over replicas. With an
      `input_context`, each pipeline batches
      `input_context.get_per_replica_batch_size(global_batch_size)`.
    preprocessing: 'standardize' (per-dimension, global training stats;
      default), 'zca' (GCN + ZCA + per-dimension standardization),
      'minibatch' (per-dimension, statistics of each batch), or 'none'
      (x / 255).
    augment: pad 4 + random crop + random flip (the paper's "+aug").
    shuffle: shuffle files and examples. Default: True for 'train'.
    seed: seeds the file order, the shuffle and the augmentation.
    drop_remainder: drop the last partial batch (static shapes, needed on
      TPU). Default: True for 'train'.
    input_context: a `tf.distribute.InputContext` (from
      `strategy.distribute_datasets_from_function`). Files are split
      between input pipelines (examples, if there are fewer files than
      pipelines).
    repeat: repeat forever. Default: True for 'train'.
    cache: True caches the deterministic part in memory (CIFAR train with
      'standardize' or 'zca': 553 MB of float32); a string caches to that
      file prefix; False does not cache.
    dataset: optional expected dataset name, checked against stats.json.
    verify: shard check before reading: 'full' (sha256), 'size' or 'none'.
    shuffle_buffer_size: examples in the shuffle buffer (capped by the
      split size).
    shard_by: how an `input_context` splits the data between input
      pipelines. 'files' (default): each pipeline reads its own files (or
      every n-th example) with its own seeds, so the example order depends
      on the number of pipelines (hosts). 'batches': every pipeline reads
      the whole split exactly as a single pipeline would (same seeds, same
      global batches, augmentation keyed by the global batch index) and
      keeps its contiguous slice of each global batch, split into one
      per-replica batch per local replica. Training then sees the same
      global batches whatever the number of hosts and replicas, at the
      cost of every host reading and augmenting all of the data (like
      tf.data's AutoShardPolicy.DATA). Needs drop_remainder=True.

  Returns:
    A `tf.data.Dataset` of (float32 images [B, H, W, C], int32 labels [B]).

  Raises:
    DataError: the data_dir is not prepared, a shard is missing or corrupt,
      the statistics do not match the shards, or the split does not exist.
  """
  prep.check_preprocessing(preprocessing)
  if shard_by not in ('files', 'batches'):
    raise ValueError("`shard_by` must be 'files' or 'batches'. "
                     f'Received: shard_by={shard_by!r}')
  global_batch_size = _positive_int('global_batch_size', global_batch_size)
  shuffle_buffer_size = _positive_int('shuffle_buffer_size',
                                      shuffle_buffer_size)
  is_train = split == 'train'
  shuffle = is_train if shuffle is None else bool(shuffle)
  drop_remainder = is_train if drop_remainder is None else bool(drop_remainder)
  repeat = is_train if repeat is None else bool(repeat)

  stats = stats_lib.load_stats(data_dir, dataset)
  paths = manifest.verify_split(data_dir, stats.info, split, verify)
  num_examples = stats.info['splits'][split]['num_examples']

  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(global_batch_size)
    num_pipelines = input_context.num_input_pipelines
    pipeline_id = input_context.input_pipeline_id
  else:
    batch_size, num_pipelines, pipeline_id = global_batch_size, 1, 0
  global_slice = None
  if input_context is not None and shard_by == 'batches':
    if not drop_remainder:
      raise ValueError("shard_by='batches' slices full global batches: it "
                       'needs drop_remainder=True. Received: '
                       'drop_remainder=False')
    # Read like the only pipeline, then keep rows [start, start + L * b) of
    # each global batch: L per-replica batches of b for the L local replicas.
    local = input_context.num_replicas_in_sync // num_pipelines
    global_slice = (pipeline_id * local * batch_size, local, batch_size)
    batch_size, num_pipelines, pipeline_id = global_batch_size, 1, 0
  file_seed, example_seed, augment_seed = _seeds(seed, pipeline_id)

  files = tf.data.Dataset.from_tensor_slices(paths)
  shard_files = num_pipelines > 1 and len(paths) >= num_pipelines
  if shard_files:
    files = files.shard(num_pipelines, pipeline_id)
  if shuffle:
    files = files.shuffle(len(paths), seed=file_seed,
                          reshuffle_each_iteration=True)
  if shuffle:  # mix 4 files at a time
    ds = files.interleave(
        tf.data.TFRecordDataset, cycle_length=min(4, len(paths)),
        num_parallel_calls=AUTOTUNE, deterministic=True)
  else:  # file order, as read_split
    ds = files.flat_map(tf.data.TFRecordDataset)
  if num_pipelines > 1 and not shard_files:
    ds = ds.shard(num_pipelines, pipeline_id)

  image_shape = stats.image_shape
  per_image = prep.per_image_fn(preprocessing, stats)
  ds = ds.batch(_PARSE_BATCH).map(
      _parse_fn(image_shape, per_image), num_parallel_calls=AUTOTUNE)
  if cache:
    ds = ds.cache(cache if isinstance(cache, str) else '')
  ds = ds.unbatch()
  if shuffle:
    ds = ds.shuffle(min(shuffle_buffer_size, num_examples), seed=example_seed,
                    reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)

  if augment or preprocessing == 'minibatch':
    base_seed = tf.constant([augment_seed, pipeline_id], tf.int64)

    def finish(index, images, labels):
      images = tf.cast(images, tf.float32)
      if augment:
        images = augment_lib.augment_batch(
            images, tf.random.experimental.stateless_fold_in(base_seed, index))
      if preprocessing == 'minibatch':
        images = prep.minibatch_standardize(images)
      return images, labels

    ds = ds.enumerate().map(lambda i, xy: finish(i, *xy),
                            num_parallel_calls=AUTOTUNE)
  if global_slice is not None:
    start, local, per_replica = global_slice

    def keep_slice(images, labels):
      end = start + local * per_replica
      return (tf.reshape(images[start:end], [local, per_replica] +
                         images.shape[1:].as_list()),
              tf.reshape(labels[start:end], [local, per_replica]))

    ds = ds.map(keep_slice).unbatch()
  ds = ds.prefetch(AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)


def read_split(data_dir, split, verify='full'):
  """Reads a whole split as NumPy, in file order: (uint8 images, int64 labels).

  Meant for tests, analysis and small datasets (CIFAR test: 31 MB).
  """
  info = manifest.load_manifest(data_dir)
  paths = manifest.verify_split(data_dir, info, split, verify)
  image_shape = tuple(info['image_shape'])
  ds = tf.data.TFRecordDataset(paths).batch(_PARSE_BATCH).map(
      lambda s: schema.parse_batch(s, image_shape))
  images, labels = [], []
  for x, y in ds.as_numpy_iterator():
    images.append(x)
    labels.append(y)
  if not images:
    return (np.zeros((0, *image_shape), np.uint8), np.zeros((0,), np.int64))
  return np.concatenate(images), np.concatenate(labels)
