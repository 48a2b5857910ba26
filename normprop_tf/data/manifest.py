"""stats.json: the manifest and completion marker of a prepared data_dir.

`data_prep.prepare` writes, in this order: the shards, `stats.npz`, then
`stats.json`, each under a temporary name renamed into place. A data_dir
without `stats.json` is therefore incomplete, whatever else it holds.

stats.json records:
- `dataset`, `image_shape`, `num_classes`, `class_names`;
- per split: example and per-class counts, and every shard's name, size,
  record count and sha256;
- `fingerprint`: sha256 over all shard entries. `stats.npz` stores the same
  fingerprint, so statistics and shards from different runs cannot mix;
- `stats`: the statistics' parameters (epsilon, GCN scale, ZCA bias, ...);
- `prepare_args`: the arguments of the run, for the idempotency check.

The reader checks a split before using it (`verify_split`): every listed
shard exists (else "missing shard"), has the recorded size and, with
`level='full'`, the recorded sha256 (else "corrupt shard"), and no unlisted
shard of that split lies beside them (else "fingerprint mismatch").
"""

import hashlib
import json
import math
import os

from normprop_tf.data import errors
from normprop_tf.data import spec as schema
from normprop_tf.utils import fileio

STATS_JSON = 'stats.json'
STATS_NPZ = 'stats.npz'
# sha256 of the manifest's other fields, and of stats.npz's bytes: any edit
# of the statistics is found (preparations made before they existed have
# neither and are checked field by field only).
CONTENT_SHA256 = 'content_sha256'
STATS_NPZ_SHA256 = 'stats_npz_sha256'
VERIFY_LEVELS = schema.VERIFY_LEVELS


def file_sha256(path, chunk_bytes=1 << 22):
  """Hex sha256 of a local or gs:// file."""
  digest = hashlib.sha256()
  with fileio.open_file(path, 'rb') as f:
    while True:
      chunk = f.read(chunk_bytes)
      if not chunk:
        return digest.hexdigest()
      digest.update(chunk)


def fingerprint(split_entries):
  """sha256 over {split: [shard entry, ...]}, independent of dict order."""
  canonical = json.dumps(
      {split: [[e['file'], e['bytes'], e['num_examples'], e['sha256']]
               for e in entries]
       for split, entries in split_entries.items()},
      sort_keys=True)
  return hashlib.sha256(canonical.encode()).hexdigest()


def fix_command(data_dir, info):
  """The prepare command that re-creates `data_dir`, with --overwrite."""
  args = (info or {}).get('prepare_args', {})
  source = args.get('source')
  cmd = errors.prepare_command(
      data_dir, (info or {}).get('dataset'),
      None if source in (None, 'tfds') else source)
  return cmd + ' --overwrite'


def load_manifest(data_dir, dataset=None):
  """Reads and sanity-checks `<data_dir>/stats.json`.

  Args:
    data_dir: directory written by `data_prep.prepare`.
    dataset: optional expected dataset name, checked against the manifest
      and used in the "not prepared" message.

  Returns:
    The manifest as a dict.

  Raises:
    DataError: the directory is not (completely) prepared, stats.json is
      unreadable, or it belongs to another dataset or format version.
  """
  if dataset is not None:
    dataset = errors.check_dataset_name(dataset)
  path = os.path.join(data_dir, STATS_JSON)
  if not fileio.exists(path):
    state = ('does not exist' if not fileio.exists(data_dir) else
             'holds no completed preparation (no stats.json)')
    raise errors.DataError(
        f'Dataset directory {data_dir} {state}. '
        + errors.not_prepared_hint(data_dir, dataset))
  try:
    with fileio.open_file(path, 'r') as f:
      info = json.load(f)
    missing = [k for k in ('splits', 'fingerprint', 'image_shape')
               if k not in info]
    if missing:
      raise KeyError(f'no {", ".join(missing)}')
  except (ValueError, KeyError, TypeError) as e:
    raise errors.DataError(
        f'{path} is corrupt ({type(e).__name__}: {e}). Re-create it: '
        f'{fix_command(data_dir, None)}') from None
  if info.get('format_version') != schema.FORMAT_VERSION:
    raise errors.DataError(
        f'{path} has format_version={info.get("format_version")!r}, but this '
        f'code reads version {schema.FORMAT_VERSION}. Re-create it: '
        f'{fix_command(data_dir, info)}')
  if dataset is not None and info.get('dataset') != dataset:
    raise errors.DataError(
        f'{data_dir} holds dataset {info.get("dataset")!r}, not {dataset!r}. '
        'Point data_dir at the right directory, or prepare a new one: '
        + errors.prepare_command(data_dir + '_' + dataset, dataset))
  check_manifest(info, path, fix_command(data_dir, info))
  return info


def content_sha256(info):
  """sha256 over every field of a manifest but this checksum itself."""
  canonical = json.dumps({k: v for k, v in info.items()
                          if k != CONTENT_SHA256}, sort_keys=True)
  return hashlib.sha256(canonical.encode()).hexdigest()


def _bad(path, field, value, expected, fix):
  return errors.DataError(
      f'{path}: {field} is {value!r}, but {expected}. The file was edited or '
      f'damaged; re-create the dataset: {fix}')


def check_manifest(info, path, fix):
  """Checks a manifest's fields against each other and the dataset.

  Raises:
    DataError: naming the file and the field that is inconsistent.
  """
  stored = info.get(CONTENT_SHA256)
  if stored is None:
    raise errors.DataError(
        f'{path} has no {CONTENT_SHA256}: it was edited, or written by an '
        f'older version of this code, so its fields cannot be trusted. '
        f'Re-create the dataset: {fix}')
  if stored != content_sha256(info):
    raise errors.DataError(
        f'{path} was modified after preparation (its {CONTENT_SHA256} does '
        f'not match its content). Re-create the dataset: {fix}')
  spec = schema.DATASETS.get(info.get('dataset'))
  if spec is None:
    raise _bad(path, 'dataset', info.get('dataset'),
               f'must be one of {sorted(schema.DATASETS)}', fix)
  for field in ('num_classes', 'image_shape'):
    want = spec[field]
    if (list(want) if field == 'image_shape' else want) != info.get(field):
      raise _bad(path, field, info.get(field), f'{info["dataset"]} has '
                 f'{field} {list(want) if field == "image_shape" else want}',
                 fix)
  for split, entry in info['splits'].items():
    counts, shards = entry.get('class_counts'), entry.get('shards', [])
    total = sum(e.get('num_examples', 0) for e in shards)
    if entry.get('num_examples') != total:
      raise _bad(path, f'splits.{split}.num_examples',
                 entry.get('num_examples'),
                 f'its shards hold {total} examples', fix)
    if counts is not None and (len(counts) != spec['num_classes'] or
                               sum(counts) != total):
      raise _bad(path, f'splits.{split}.class_counts', counts,
                 f'it must have {spec["num_classes"]} classes adding up to '
                 f'{total}', fix)
  params = info.get('stats', {})
  epsilon = params.get('std_epsilon')
  if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and
          epsilon > 0):
    raise _bad(path, 'stats.std_epsilon', epsilon,
               'it must be a positive finite number (0.001)', fix)
  train = info['splits'].get('train', {}).get('num_examples')
  if params.get('num_examples') != train:
    raise _bad(path, 'stats.num_examples', params.get('num_examples'),
               f'the training split holds {train} examples', fix)


def verify_split(data_dir, info, split, level='full'):
  """Checks the shards of `split` against the manifest.

  Args:
    data_dir: the prepared directory.
    info: its manifest, from `load_manifest`.
    split: 'train', 'validation' or 'test'.
    level: 'full' (sizes and sha256: about 0.2 s per 100 MB), 'size', or
      'none'.

  Returns:
    The sorted list of the split's shard paths.

  Raises:
    DataError: unknown split, missing shard, corrupt shard, or shards that
      do not match the manifest's fingerprint.
  """
  if level not in VERIFY_LEVELS:
    raise ValueError(f'`verify` must be one of {VERIFY_LEVELS}. '
                     f'Received: verify={level!r}')
  if split not in info['splits']:
    raise errors.DataError(
        f'Split {split!r} is not in {data_dir} (it has: '
        f'{", ".join(info["splits"])}). A validation split exists only when '
        'prepare ran with --validation_size > 0 (SVHN: always).')
  entries = info['splits'][split]['shards']
  fix = fix_command(data_dir, info)
  paths = []
  for entry in entries:
    path = os.path.join(data_dir, entry['file'])
    paths.append(path)
    if level == 'none':
      continue
    if not fileio.exists(path):
      raise errors.DataError(
          f'Missing shard {path} (listed in {STATS_JSON}). Restore it, or '
          f're-create the dataset: {fix}')
    size = fileio.size(path)
    if size != entry['bytes']:
      raise errors.DataError(
          f'Corrupt shard {path}: {size} bytes, but {STATS_JSON} records '
          f'{entry["bytes"]}. It was truncated or overwritten; re-create the '
          f'dataset: {fix}')
    if level == 'full' and file_sha256(path) != entry['sha256']:
      raise errors.DataError(
          f'Corrupt shard {path}: its sha256 differs from the one in '
          f'{STATS_JSON}. Re-create the dataset: {fix}')
  if level != 'none':
    listed = {e['file'] for e in entries}
    on_disk = set()
    for path in fileio.glob(os.path.join(data_dir, f'{split}-*.tfrecord')):
      parsed = schema.parse_shard_filename(os.path.basename(path))
      if parsed and parsed[0] == split:
        on_disk.add(os.path.basename(path))
    unlisted = sorted(on_disk - listed)
    if unlisted:
      raise errors.DataError(
          f'Statistics fingerprint mismatch in {data_dir}: shard(s) '
          f'{", ".join(unlisted)} are not part of the preparation that '
          f'{STATS_JSON} describes (fingerprint {info["fingerprint"][:12]}), '
          f'so the statistics were not computed from these shards. Delete '
          f'the stray files or re-create the dataset: {fix}')
  return paths
