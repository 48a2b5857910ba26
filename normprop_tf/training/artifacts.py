"""The files a run leaves besides its records: configs, header, final model.

- `operative_config.gin`: every gin setting the run used, written when it
  starts (for runs that get killed) and again at the end; also shown as
  text in TensorBoard.
- The HParams entry of the run, at the root of its TensorBoard directory.
- `model.keras` and a SavedModel in `saved_model/`, written by the chief at
  the end.
"""

import os

import gin
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from normprop_tf.utils import fileio

MODEL_FILE = 'model.keras'
SAVED_MODEL_DIR = 'saved_model'
OPERATIVE_CONFIG_FILE = 'operative_config.gin'


def write_operative_config(model_dir):
  """Writes `gin.operative_config_str()` beside the events; returns it."""
  text = gin.operative_config_str()
  fileio.atomic_write(os.path.join(model_dir, OPERATIVE_CONFIG_FILE), text)
  return text


def flat_hparams(settings):
  """{'model.norm': 'normprop', ...}: the run's settings as HParams values."""
  flat = {}
  for group, values in settings.items():
    for key, value in values.items():
      flat[f'{group}.{key}'] = (value if isinstance(
          value, (bool, int, float, str)) else str(value))
  return flat


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


def save_model(model, model_dir):
  """`model.keras` and the SavedModel of the final weights."""
  model.save(os.path.join(model_dir, MODEL_FILE))
  model.export(os.path.join(model_dir, SAVED_MODEL_DIR), verbose=False)
