"""Faults and hostile input, in process: each case ends in one clear error.

The cases of the reliability review that need no subprocess: a pickle
payload, damaged records and checkpoints, edited statistics, data_dirs
prepared with other arguments, runs resumed with other settings, bad
settings, truncated and padded archives. The concurrency, signal and
kill-point cases are in faults_subprocess_test.py.
"""

import io
import json
import os
import pathlib
import pickle
import shutil
import tarfile
import time
import tracemalloc

import gin
import numpy as np
import pytest

from normprop_tf import data
from normprop_tf.data import manifest
from normprop_tf.data import stats as stats_lib
from normprop_tf.data.preparation import auto
from normprop_tf.data.preparation import class_folders
from normprop_tf.data.preparation import options as options_lib
from normprop_tf.data.preparation import preparer
from normprop_tf.training import config as cfg
from normprop_tf.training import errors
from normprop_tf.training import gin_config
from normprop_tf.training import identity
from normprop_tf.training import records
from normprop_tf.utils import checks
from tests.data_fixtures import NUM_SHARDS
from tests.data_fixtures import ROOT
from tests.data_fixtures import SEED
from tests.data_fixtures import VALIDATION_SIZE

pytest_plugins = ('tests.data_fixtures',)
DataError = data.DataError


def _tar(path, members):
  mode = 'w' if str(path).endswith('.tar') else 'w:gz'
  with tarfile.open(path, mode) as tar:
    for name, content in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(content)
      tar.addfile(info, io.BytesIO(content))
  return str(path)


class _Payload:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


# ---- hostile archives --------------------------------------------------------


def test_a_pickle_payload_is_refused_and_never_runs(tmp_path):
  marker = tmp_path / 'pwned'
  batch = pickle.dumps({b'data': _Payload(str(marker)), b'labels': [0]})
  archive = _tar(tmp_path / 'evil.tar.gz', {
      f'cifar-10-batches-py/data_batch_{i}': batch for i in range(1, 6)})
  with pytest.raises(DataError, match=r'refused to load posix\.system'):
    preparer.prepare('cifar10', str(tmp_path / 'out'), source=archive)
  assert not marker.exists()


def test_one_pickle_in_a_jpeg_tarball_is_refused_and_never_runs(
    subset_members, tmp_path):
  """The JPEG copy plus one file named like a CIFAR batch: the archive is
  read as a python archive, and the payload is refused, not run."""
  marker = tmp_path / 'pwned'
  members = dict(subset_members)
  members['cifar-10-batches-py/data_batch_1'] = pickle.dumps(
      {b'data': _Payload(str(marker)), b'labels': [0]})
  with pytest.raises(DataError, match=r'refused to load posix\.system'):
    preparer.prepare('cifar10', str(tmp_path / 'out'),
                     source=_tar(tmp_path / 'mixed.tar.gz', members))
  assert not marker.exists()


def test_a_non_dict_pickle_is_one_error(tmp_path):
  archive = _tar(tmp_path / 'list.tar.gz', {
      'cifar-10-batches-py/data_batch_1': pickle.dumps([1, 2, 3])})
  with pytest.raises(DataError, match='holds a list, not the dict'):
    preparer.prepare('cifar10', str(tmp_path / 'out'), source=archive)


@pytest.mark.parametrize('suffix', ['.tar', '.tar.gz'])
def test_a_tar_cut_at_a_file_boundary_is_refused(subset_members, tmp_path,
                                                 suffix):
  # Train first, then the test images, cut after 36 of the 100.
  names = sorted(subset_members, key=lambda n: (not n.startswith('train/'), n))
  cut = {n: subset_members[n] for n in names[:400 + 36]}
  with pytest.raises(DataError, match=r'test/ holds .*classes empty.*'
                     'looks truncated'):
    preparer.prepare('cifar10', str(tmp_path / 'out'),
                     source=_tar(tmp_path / f'cut{suffix}', cut))


def test_a_huge_non_image_member_is_skipped_unread(subset_members, tmp_path):
  members = dict(subset_members)
  # 48 MB, over the 40 MB bound below, so holding it would fail. Random
  # bytes, because tarfile skips a member of a .tar.gz by decompressing it
  # into a buffer it re-slices per 10 KB read: zeros (1000:1) make that
  # quadratic (seconds, tens of seconds on a busy machine), random bytes not.
  members['README.bin'] = np.random.default_rng(0).bytes(48 * 2**20)
  archive = _tar(tmp_path / 'padded.tar.gz', members)
  tracemalloc.start()
  files = class_folders.read_archive(archive)
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  assert 'README.bin' not in files and len(files) == len(subset_members)
  assert peak < 40 * 2**20, peak  # The images are ~1 MB; 48 MB never held.


# ---- statistics -------------------------------------------------------------


def _edit_manifest(data_dir, edit, keep_checksum=False):
  path = os.path.join(data_dir, manifest.STATS_JSON)
  with open(path) as f:
    info = json.load(f)
  edit(info)
  if keep_checksum:
    info[manifest.CONTENT_SHA256] = manifest.content_sha256(info)
  with open(path, 'w') as f:
    json.dump(info, f)


@pytest.mark.parametrize('edit,match', [
    (lambda i: i.update(num_classes=100), 'num_classes is 100'),
    (lambda i: i.update(num_classes=5), 'num_classes is 5'),
    (lambda i: i.update(image_shape=[28, 28, 1]), 'image_shape is'),
    (lambda i: i['splits']['train'].update(num_examples=3500),
     'splits.train.num_examples is 3500'),
    (lambda i: i['stats'].update(std_epsilon=-1e9),
     'stats.std_epsilon is -1000000000.0'),
])
def test_edited_statistics_are_named(prepared, tmp_path, edit, match):
  data_dir = str(tmp_path / 'copy')
  shutil.copytree(prepared[0], data_dir)
  # Even with the checksum recomputed, each field is checked.
  _edit_manifest(data_dir, edit, keep_checksum=True)
  with pytest.raises(DataError, match=match):
    data.load_stats(data_dir)
  shutil.rmtree(data_dir)
  shutil.copytree(prepared[0], data_dir)
  _edit_manifest(data_dir, lambda i: i['splits']['test'].update(
      created='later'))
  with pytest.raises(DataError, match='modified after preparation'):
    data.load_stats(data_dir)


@pytest.mark.parametrize('field', [manifest.CONTENT_SHA256,
                                   manifest.STATS_NPZ_SHA256])
def test_statistics_without_their_checksums_are_refused(prepared, tmp_path,
                                                        field):
  """Removing a checksum does not switch its check off."""
  data_dir = str(tmp_path / 'copy')
  shutil.copytree(prepared[0], data_dir)
  _edit_manifest(data_dir, lambda i: i.pop(field),
                 keep_checksum=field != manifest.CONTENT_SHA256)
  with pytest.raises(DataError, match=f'has no {field}'):
    data.load_stats(data_dir)


def test_truncated_or_non_finite_statistics_are_named(prepared, tmp_path):
  data_dir = str(tmp_path / 'copy')
  shutil.copytree(prepared[0], data_dir)
  path = os.path.join(data_dir, manifest.STATS_NPZ)
  with open(path, 'r+b') as f:
    f.truncate(200)
  with pytest.raises(DataError, match=r'stats.npz is corrupt \(BadZipFile'):
    data.load_stats(data_dir)
  shutil.rmtree(data_dir)
  shutil.copytree(prepared[0], data_dir)
  st = stats_lib.load_stats(data_dir)
  arrays = dict(st.arrays, std=np.full_like(st.arrays['std'], np.nan))
  sha = stats_lib.save_npz(path, arrays, st.info['fingerprint'])
  _edit_manifest(data_dir, lambda i: i.update(
      {manifest.STATS_NPZ_SHA256: sha}), keep_checksum=True)
  with pytest.raises(DataError, match='std holds 3072 non-finite values'):
    data.load_stats(data_dir)
  arrays = dict(st.arrays, std=np.zeros_like(st.arrays['std']))
  sha = stats_lib.save_npz(path, arrays, st.info['fingerprint'])
  _edit_manifest(data_dir, lambda i: i.update(
      {manifest.STATS_NPZ_SHA256: sha}), keep_checksum=True)
  with pytest.raises(DataError, match='std is negative or zero everywhere'):
    data.load_stats(data_dir)


def test_statistics_are_read_once_and_a_rewrite_is_still_caught(
    prepared, tmp_path, monkeypatch):
  """load_stats reads an unchanged stats.npz once per process, read-only;
  a rewrite of the same size with its mtime put back is still noticed."""
  data_dir = str(tmp_path / 'copy')
  shutil.copytree(prepared[0], data_dir)
  reads = []
  read = stats_lib._read_npz  # pylint: disable=protected-access
  monkeypatch.setattr(stats_lib, '_read_npz',
                      lambda *args: reads.append(1) or read(*args))
  first = data.load_stats(data_dir)
  for _ in range(3):
    again = data.load_stats(data_dir)
  assert len(reads) == 1
  np.testing.assert_array_equal(again.arrays['std'], first.arrays['std'])
  with pytest.raises(ValueError, match='read-only'):
    first.arrays['std'][0] = 0.0
  path = os.path.join(data_dir, manifest.STATS_NPZ)
  status = os.stat(path)
  content = bytearray(pathlib.Path(path).read_bytes())
  content[len(content) // 2] ^= 0xFF
  pathlib.Path(path).write_bytes(bytes(content))
  os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
  # The zip's CRC or the sha256 in stats.json catches it, either way.
  with pytest.raises(DataError,
                     match='stats.npz is corrupt|modified after preparation'):
    data.load_stats(data_dir)
  assert len(reads) == 2


# ---- a data_dir prepared with other arguments --------------------------------


def test_a_data_dir_is_reused_only_with_the_same_arguments(prepared,
                                                           subset_tar):
  data_dir, _ = prepared
  same = dict(num_shards=NUM_SHARDS, validation_size=VALIDATION_SIZE,
              seed=SEED)
  info = auto.ensure_prepared('cifar10', data_dir, source=subset_tar, **same)
  assert info['fingerprint'] == prepared[1]['fingerprint']
  for change, match in ((dict(validation_size=100),
                         'validation_size: 50 -> 100'),
                        (dict(subset_per_class=5), 'subset_per_class'),
                        (dict(jpeg_idct='tf_default'),
                         "jpeg_idct: 'accurate' -> None")):
    with pytest.raises(DataError, match=match + '.*dataset.data_dir'):
      auto.ensure_prepared('cifar10', data_dir, source=subset_tar,
                           **dict(same, **change))
  other = str(ROOT / 'README.md')  # Another source's content.
  with pytest.raises(DataError, match='source_fingerprint'):
    auto.ensure_prepared('cifar10', data_dir, source=other, **same)


def test_an_unwritable_data_dir_is_one_error(subset_tar, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  with pytest.raises(DataError, match='Cannot create the data directory'):
    preparer.prepare('cifar10', str(blocker / 'data'), source=subset_tar)


# ---- records and checkpoints -------------------------------------------------


def test_records_stay_keyed_and_unique(tmp_path):
  rec = records.Recorder(str(tmp_path), seed=1, config='c')
  rec.scalars('probe', 0, 0.0, {'gap': 1.0})
  rec.scalars('train', 10, 1.0, {'loss': 2.0})
  rec.flush()
  # A run killed while appending leaves half a line.
  with open(tmp_path / records.METRICS_FILE, 'a') as f:
    f.write('{"step": 20, "epo')
  again = records.Recorder(str(tmp_path), seed=1, config='c')
  again.truncate_after(10)  # A resume: the half line goes, with a warning.
  again.scalars('probe', 0, 0.0, {'gap': 1.5})  # Step 0 recorded again.
  again.flush()
  rows = records.read_jsonl(str(tmp_path / records.METRICS_FILE))
  keys = [(r['step'], r['split'], r['metric']) for r in rows]
  assert sorted(keys) == [(0, 'probe', 'gap'), (10, 'train', 'loss')]
  assert [r['value'] for r in rows if r['split'] == 'probe'] == [1.5]
  with open(tmp_path / records.METRICS_FILE, 'a') as f:
    f.write('not json\n{"step": 30, "split": "x", "metric": "y"}\n')
  with pytest.raises(errors.TrainingError, match='damaged at line 3 of 4'):
    records.read_jsonl(str(tmp_path / records.METRICS_FILE))


def test_a_rerun_with_other_settings_is_refused(tmp_path):
  base = {'model': {'norm': 'normprop', 'width': 0.25},
          'optimizer': {'learning_rate': 0.05},
          'data': {'name': 'cifar10', 'fingerprint': 'abc'},
          'length': {'total_steps': 100, 'steps_per_epoch': 10},
          'trainer': {'log_every_steps': 10}}
  records.write_json(str(tmp_path / records.CONFIG_FILE), base)
  cadence = json.loads(json.dumps(base))
  cadence['trainer']['log_every_steps'] = 5  # Cadence may change.
  identity.check_resume(str(tmp_path), cadence)
  for group, key, value in (('model', 'width', 0.5),
                            ('model', 'norm', 'batchnorm'),
                            ('optimizer', 'learning_rate', 0.1),
                            ('length', 'total_steps', 200),
                            ('data', 'fingerprint', 'def')):
    other = json.loads(json.dumps(base))
    other[group][key] = value
    with pytest.raises(errors.RunMismatchError,
                       match=rf'{group}\.{key}: .* -> .*new --model_dir'):
      identity.check_resume(str(tmp_path), other)


def test_temporary_checkpoint_folders_are_removed(tmp_path):
  from normprop_tf import models  # pylint: disable=g-import-not-at-top
  from normprop_tf.training import checkpointing  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  model = models.nin('plain', width=0.05)
  optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
  optimizer.build(model.trainable_variables)
  ckpt = checkpointing.Checkpointer(str(tmp_path), model, optimizer)
  ckpt.save(5, 1.0)
  leftover = tmp_path / 'checkpoints' / 'ckpt-10_temp'
  leftover.mkdir()
  (leftover / 'part-00000-of-00001.data-00000-of-00001').write_bytes(b'x')
  assert ckpt.restore()[0] == 5
  assert not leftover.exists()


# ---- settings a user can get wrong -------------------------------------------


@pytest.mark.parametrize('binding,match', [
    ("nin.width = 'abc'", "Received: width='abc'"),
    ("optimizer.momentum = 'abc'", "Received: momentum='abc'"),
    ("experiment.seed = 'x'", "Received: seed='x'"),
    ('nin.dropout = 1.5', 'Received: dropout=1.5'),
    ('trainer.keep_checkpoints = 0', 'Received: keep_checkpoints=0'),
    ('lr_schedule.decay_at = 0.5', 'Received: decay_at=0.5'),
    ("nin.activation = 'nope'", "Received: activation='nope'"),
    ('hidden_stats.probe_batch_size = 0', 'Received: probe_batch_size=0'),
])
def test_bad_settings_name_the_setting_and_value(binding, match):
  gin.clear_config()
  try:
    gin_config.parse([str(ROOT / 'gin' / 'smoke.gin')], [binding])
    with pytest.raises(checks.ArgumentError, match=match) as info:
      cfg.Configs.from_gin()
    assert errors.user_message(info.value).count('\n') == 0
  finally:
    gin.clear_config()


def test_an_integer_learning_rate_and_a_directory_as_gin_file(tmp_path):
  from normprop_tf.training import optimization  # pylint: disable=g-import-not-at-top
  sgd = optimization.build_optimizer(
      cfg.OptimizerConfig(learning_rate=30), cfg.ScheduleConfig('constant'),
      100, 'float32')
  assert float(sgd.learning_rate) == 30.0
  with pytest.raises(errors.ConfigError, match='is a directory'):
    gin_config.parse([str(tmp_path)])


def test_an_options_typo_is_a_data_error():
  with pytest.raises(DataError, match='Unknown preparation option'):
    options_lib.make(validation_sise=5)
  assert time.time() > 0


# ---- final artifacts and a full disk ------------------------------------------


def test_a_continued_run_drops_its_final_artifacts(tmp_path):
  """summary.json and the final models never describe an older state than
  the latest checkpoint: training that continues removes them first."""
  from normprop_tf.training import artifacts  # pylint: disable=g-import-not-at-top
  for name in (artifacts.SUMMARY_FILE, artifacts.MODEL_FILE,
               artifacts.CORE_MODEL_FILE):
    (tmp_path / name).write_text('old')
  (tmp_path / artifacts.SAVED_MODEL_DIR).mkdir()
  (tmp_path / artifacts.SAVED_MODEL_DIR / 'saved_model.pb').write_text('old')
  (tmp_path / records.METRICS_FILE).write_text('')
  artifacts.remove_final(str(tmp_path))
  assert sorted(p.name for p in tmp_path.iterdir()) == [records.METRICS_FILE]


def test_a_full_disk_is_one_line_that_says_the_checkpoint_is_intact(
    tmp_path, monkeypatch, capsys):
  """ENOSPC from a Python-side write (records, config, export) ends like
  TensorFlow's own disk-full error: one line, exit status 1."""
  import errno  # pylint: disable=g-import-not-at-top
  from normprop_tf.training import cli  # pylint: disable=g-import-not-at-top

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device', 'metrics.jsonl')

  monkeypatch.setattr(cli, '_train', full)
  assert cli.train([], [], str(tmp_path), 'python -m normprop_tf.train') == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(
      'normprop_tf.train: error: The disk is full')
  assert 'last checkpoint' in err[0] and 'rerun the same command' in err[0]
