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

import dataclasses

import numpy as np
import tensorflow as tf

from normprop_tf.data import augment as augment_lib
from normprop_tf.data import manifest
from normprop_tf.data import preprocessing as prep
from normprop_tf.data import schema
from normprop_tf.data import stats as stats_lib
from normprop_tf.utils import checks

_PARSE_BATCH = 1024
# Examples in the training shuffle buffer (capped by the split size).
SHUFFLE_BUFFER_SIZE = 16384
AUTOTUNE = tf.data.AUTOTUNE


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
                 preprocessing='standardize', augment=False, training=None,
                 seed=0, drop_remainder=None, input_context=None,
                 shard_by='files', cache=True, verify='full'):
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
    training: shuffle files and examples (seeded) and repeat forever.
      Default: True for 'train'. Evaluation reads the split once, in order.
    seed: seeds the file order, the shuffle and the augmentation.
    drop_remainder: drop the last partial batch (static shapes, needed on
      TPU). Default: `training`.
    input_context: a `tf.distribute.InputContext` (from
      `strategy.distribute_datasets_from_function`). Files are split
      between input pipelines (examples, if there are fewer files than
      pipelines).
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
    cache: True caches the deterministic part in memory (CIFAR train with
      'standardize' or 'zca': 553 MB of float32); a string caches to that
      file prefix; False does not cache.
    verify: shard check before reading: 'full' (sha256), 'size' or 'none'.

  Returns:
    A `tf.data.Dataset` of (float32 images [B, H, W, C], int32 labels [B]).

  Raises:
    DataError: the data_dir is not prepared, a shard is missing or corrupt,
      the statistics do not match the shards, or the split does not exist.
  """
  prep.check_preprocessing(preprocessing)
  checks.one_of('shard_by', shard_by, ('files', 'batches'))
  global_batch_size = checks.positive_int('global_batch_size',
                                          global_batch_size)
  training = split == 'train' if training is None else bool(training)
  drop_remainder = training if drop_remainder is None else bool(
      drop_remainder)
  stats = stats_lib.load_stats(data_dir)
  paths = manifest.verify_split(data_dir, stats.info, split, verify)
  num_examples = stats.info['splits'][split]['num_examples']
  layout = _Layout.of(input_context, global_batch_size, shard_by,
                      drop_remainder)
  file_seed, example_seed, augment_seed = _seeds(seed, layout.pipeline_id)

  ds = _records(paths, layout, training, file_seed)
  ds = ds.batch(_PARSE_BATCH).map(
      _parse_fn(stats.image_shape, prep.per_image_fn(preprocessing, stats)),
      num_parallel_calls=AUTOTUNE)
  if cache:
    ds = ds.cache(cache if isinstance(cache, str) else '')
  ds = ds.unbatch()
  if training:
    ds = ds.shuffle(min(SHUFFLE_BUFFER_SIZE, num_examples), seed=example_seed,
                    reshuffle_each_iteration=True).repeat()
  ds = ds.batch(layout.batch_size, drop_remainder=drop_remainder)
  if augment or preprocessing == 'minibatch':
    ds = _finish(ds, augment, preprocessing, augment_seed, layout.pipeline_id)
  if layout.global_slice is not None:
    ds = _keep_slice(ds, *layout.global_slice)
  options = tf.data.Options()
  options.deterministic = True
  return ds.prefetch(AUTOTUNE).with_options(options)


@dataclasses.dataclass(frozen=True)
class _Layout:
  """How one input pipeline reads: its batch, its id among the pipelines."""
  batch_size: int
  num_pipelines: int
  pipeline_id: int
  global_slice: tuple = None  # (start, local replicas, per-replica batch)

  @classmethod
  def of(cls, input_context, global_batch_size, shard_by, drop_remainder):
    if input_context is None:
      return cls(global_batch_size, 1, 0)
    batch_size = input_context.get_per_replica_batch_size(global_batch_size)
    num_pipelines = input_context.num_input_pipelines
    pipeline_id = input_context.input_pipeline_id
    if shard_by == 'files':
      return cls(batch_size, num_pipelines, pipeline_id)
    if not drop_remainder:
      raise ValueError("shard_by='batches' slices full global batches: it "
                       'needs drop_remainder=True. Received: '
                       'drop_remainder=False')
    # Read like the only pipeline, then keep rows [start, start + L * b) of
    # each global batch: L per-replica batches of b for the L local replicas.
    local = input_context.num_replicas_in_sync // num_pipelines
    return cls(global_batch_size, 1, 0,
               (pipeline_id * local * batch_size, local, batch_size))


def _records(paths, layout, training, file_seed):
  """The serialized records this pipeline reads, in (shuffled) file order."""
  num_pipelines, pipeline_id = layout.num_pipelines, layout.pipeline_id
  files = tf.data.Dataset.from_tensor_slices(paths)
  shard_files = num_pipelines > 1 and len(paths) >= num_pipelines
  if shard_files:
    files = files.shard(num_pipelines, pipeline_id)
  if training:  # Shuffle the files, then mix 4 at a time.
    files = files.shuffle(len(paths), seed=file_seed,
                          reshuffle_each_iteration=True)
    ds = files.interleave(
        tf.data.TFRecordDataset, cycle_length=min(4, len(paths)),
        num_parallel_calls=AUTOTUNE, deterministic=True)
  else:  # File order, as read_split.
    ds = files.flat_map(tf.data.TFRecordDataset)
  if num_pipelines > 1 and not shard_files:
    ds = ds.shard(num_pipelines, pipeline_id)
  return ds


def _finish(ds, augment, preprocessing, augment_seed, pipeline_id):
  """Augmentation keyed by the batch index, then 'minibatch' statistics."""
  base_seed = tf.constant([augment_seed, pipeline_id], tf.int64)

  def finish(index, images, labels):
    images = tf.cast(images, tf.float32)
    if augment:
      images = augment_lib.augment_batch(
          images, tf.random.experimental.stateless_fold_in(base_seed, index))
    if preprocessing == 'minibatch':
      images = prep.minibatch_standardize(images)
    return images, labels

  return ds.enumerate().map(lambda i, xy: finish(i, *xy),
                            num_parallel_calls=AUTOTUNE)


def _keep_slice(ds, start, local, per_replica):
  """This pipeline's rows of each global batch, one batch per replica."""

  def keep_slice(images, labels):
    end = start + local * per_replica
    return (tf.reshape(images[start:end], [local, per_replica] +
                       images.shape[1:].as_list()),
            tf.reshape(labels[start:end], [local, per_replica]))

  return ds.map(keep_slice).unbatch()


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
