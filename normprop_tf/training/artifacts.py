"""The files a run leaves besides its records: configs, header, final model.

- `operative_config.gin`: every gin setting the run used, written when it
  starts (for runs that get killed) and again at the end; also shown as
  text in TensorBoard.
- The HParams entry of the run, at the root of its TensorBoard directory.
- `model.keras` and a SavedModel in `saved_model/` that take raw pixels,
  `core_model.keras` (the network alone) and `input_statistics/`, written
  by the chief at the end (`save_model`).
"""

import os

import gin
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from normprop_tf import input_normalization
from normprop_tf.data import manifest
from normprop_tf.data import stats as stats_lib
from normprop_tf.utils import fileio

MODEL_FILE = 'model.keras'
CORE_MODEL_FILE = 'core_model.keras'
SAVED_MODEL_DIR = 'saved_model'
OPERATIVE_CONFIG_FILE = 'operative_config.gin'
SUMMARY_FILE = 'summary.json'
STATS_COPY_DIR = 'input_statistics'


def write_operative_config(model_dir):
  """Writes `gin.operative_config_str()` beside the events; returns it."""
  text = gin.operative_config_str()
  fileio.atomic_write(os.path.join(model_dir, OPERATIVE_CONFIG_FILE), text)
  return text


# Settings that comparisons usually vary, first: TensorBoard's HParams table
# shows the first few columns until the user picks others, and it cannot
# tell which settings differ when every run writes its own config.
LEADING_HPARAMS = ('model.norm', 'model.width', 'optimizer.learning_rate',
                   'runtime.seed', 'train_input.augment',
                   'train_input.preprocessing', 'length.total_steps',
                   'train_input.global_batch_size')


def flat_hparams(settings):
  """{'model.norm': 'normprop', ...}: the run's settings as HParams values,
  the `LEADING_HPARAMS` first."""
  flat = {}
  for group, values in settings.items():
    for key, value in values.items():
      flat[f'{group}.{key}'] = (value if isinstance(
          value, (bool, int, float, str)) else str(value))
  lead = [k for k in LEADING_HPARAMS if k in flat]
  return {**{k: flat[k] for k in lead},
          **{k: v for k, v in flat.items() if k not in lead}}


def write_run_header(writer, model_dir, trial_id, step, hparams):
  """The operative config (file and text summary) and the HParams entry."""
  config_text = write_operative_config(model_dir)
  with writer.as_default(step=step):
    hp.hparams_config(
        hparams=[hp.HParam(k) for k in hparams],
        metrics=[hp.Metric('error', group='validation',
                           display_name='validation error'),
                 hp.Metric('error', group='test', display_name='test error'),
                 hp.Metric('loss', group='train', display_name='train loss')])
    hp.hparams(hparams, trial_id=trial_id)
    tf.summary.text('operative_config', '```\n' + (
        config_text or '(trained without gin)') + '\n```')


def remove_final(model_dir):
  """Deletes summary.json and the final models (a resumed run rewrites them).

  Called when training continues, so that they never describe a state
  older than the latest checkpoint.
  """
  for name in (SUMMARY_FILE, MODEL_FILE, CORE_MODEL_FILE):
    path = os.path.join(model_dir, name)
    if tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)
  path = os.path.join(model_dir, SAVED_MODEL_DIR)
  if tf.io.gfile.exists(path):
    tf.io.gfile.rmtree(path)


def _save_keras(model, path):
  """`model.save` to a temporary name, then renamed: never half a file."""
  tmp = f'{path[:-len(".keras")]}.tmp-{os.getpid()}.keras'
  model.save(tmp)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def save_model(model, model_dir, data_dir, preprocessing):
  """The final models, each written atomically:

  - `model.keras` and the SavedModel `saved_model/`: raw pixels in, logits
    out (`InputNormalization` with the run's statistics in front of the
    network), so a user needs no preprocessing step;
  - `core_model.keras`: the network alone, on preprocessed images;
  - `input_statistics/`: a copy of the data_dir's stats.json and stats.npz.

  With 'minibatch' preprocessing, which depends on the batch, both files
  hold the network alone.
  """
  stats = stats_lib.load_stats(data_dir)
  serving = input_normalization.with_input_normalization(model, stats,
                                                         preprocessing)
  _save_keras(model, os.path.join(model_dir, CORE_MODEL_FILE))
  _save_keras(serving or model, os.path.join(model_dir, MODEL_FILE))
  copy = os.path.join(model_dir, STATS_COPY_DIR)
  tf.io.gfile.makedirs(copy)
  for name in (manifest.STATS_JSON, manifest.STATS_NPZ):
    tf.io.gfile.copy(os.path.join(data_dir, name), os.path.join(copy, name),
                     overwrite=True)
  path = os.path.join(model_dir, SAVED_MODEL_DIR)
  if fileio.is_remote(path):  # Object stores cannot rename directories.
    (serving or model).export(path, verbose=False)
    return
  tmp = f'{path}.tmp-{os.getpid()}'
  (serving or model).export(tmp, verbose=False)
  if tf.io.gfile.exists(path):
    tf.io.gfile.rmtree(path)
  tf.io.gfile.rename(tmp, path)
