"""Trains a gin experiment with `model.fit` under any Keras backend.

The same components as the TensorFlow path, from the same gin files
(`normprop_tf.training.config`): the NIN (`nin`), SGD and its schedule
(`training.optimization`), the epochs or steps, the batch, the seed, and the
data's split, statistics and augmentation (`normprop_tf.fit.data`,
`normprop_tf.fit.inputs`). Nothing here imports TensorFlow, so on a machine
with JAX and no TensorFlow this trains the paper's experiments on its
accelerator (`python -m normprop_tf.train_jax`).

What it writes into model_dir, as the TensorFlow path does: metrics.jsonl,
summary.json (with the backend and the device named), config.json,
operative_config.gin, flags.json (the entry point), model.keras (raw pixels
in) and core_model.keras (the network alone). Not: TensorBoard events,
hidden-layer statistics, checkpoints, a SavedModel.

Resume: this runner **restarts**. A model_dir with a completed
summary.json is left as it is ("already complete"); one with records of an
unfinished attempt is cleared and trained again from step 0, and the log
says so. (Epoch-level resume would need Keras' BackupAndRestore and a data
order keyed by the restored epoch; the full-scale runs this runner exists
for take minutes on an accelerator.)
"""

import os
import time

from absl import logging
import gin
import keras

from normprop_tf import input_normalization
from normprop_tf.data.preparation import options as options_lib
from normprop_tf.fit import callbacks as callbacks_lib
from normprop_tf.fit import data as data_lib
from normprop_tf.fit import inputs
from normprop_tf.training import config as cfg
from normprop_tf.training import optimization
from normprop_tf.training import progress as progress_lib
from normprop_tf.training import records
from normprop_tf.utils import checks
from normprop_tf.utils import fileio
from normprop_tf.utils import hardware

MODEL_FILE = 'model.keras'  # Raw pixels in (InputNormalization in front).
CORE_MODEL_FILE = 'core_model.keras'  # The network alone.
_ATTEMPT_FILES = (records.METRICS_FILE, records.SUMMARY_FILE,
                  records.CONFIG_FILE, MODEL_FILE, CORE_MODEL_FILE,
                  'operative_config.gin')


def _save(model, path):
  """`model.save` to a temporary name, then renamed: never half a file."""
  tmp = f'{path[:-len(".keras")]}.tmp-{os.getpid()}.keras'
  model.save(tmp)
  os.replace(tmp, path)


def device_info():
  """{'logical_devices': {...}, 'device_kind': ...} of the Keras backend."""
  backend = keras.backend.backend()
  if backend == 'jax':
    import jax  # pylint: disable=g-import-not-at-top
    devices = jax.devices()
    counts = {}
    for d in devices:
      counts[d.platform.upper()] = counts.get(d.platform.upper(), 0) + 1
    return counts, {'jax': jax.__version__,
                    'device_kind': devices[0].device_kind}
  return {}, {}


def _start_fresh(model_dir):
  """True to train; False when model_dir holds a completed run."""
  summary = os.path.join(model_dir, records.SUMMARY_FILE)
  if fileio.exists(summary):
    logging.info('%s holds a completed run (summary.json): nothing to do. '
                 'Use another --model_dir to train again.', model_dir)
    return False
  leftovers = [f for f in _ATTEMPT_FILES
               if fileio.exists(os.path.join(model_dir, f))]
  if leftovers:
    logging.warning('%s holds records of an unfinished attempt (%s). This '
                    'runner does not resume: training again from step 0.',
                    model_dir, ', '.join(leftovers))
    for name in leftovers:
      fileio.remove(os.path.join(model_dir, name))
  return True


def prepare_data(configs=None):
  """Decodes and caches the configured dataset; returns its `Arrays`."""
  configs = configs or cfg.Configs.from_gin()
  data = configs.data
  options = options_lib.make(
      subset_per_class=data.subset_per_class,
      validation_size=data.validation_size,
      compute_zca=configs.train_input.preprocessing == 'zca',
      zca_epsilon=data.zca_epsilon, jpeg_idct=data.jpeg_idct)
  return data_lib.load(data.name, data.data_dir, data.source, options)


def _schedule(configs, steps_per_epoch, total_steps):
  t = configs.trainer
  eval_every = steps_per_epoch if t.eval_every_steps is None else (
      t.eval_every_steps)
  for name, every in (('log_every_steps', t.log_every_steps),
                      ('eval_every_steps', eval_every)):
    if every % t.steps_per_loop:
      checks.fail(name, every, f'must be a multiple of trainer.steps_per_loop '
                  f'({t.steps_per_loop}) for model.fit')
  return {'total_steps': total_steps, 'steps_per_epoch': steps_per_epoch,
          'log_every': t.log_every_steps, 'eval_every': eval_every,
          'eval_test': t.eval_test,
          'global_batch_size': configs.train_input.global_batch_size,
          'eval_batch_size': configs.eval_input.global_batch_size,
          'minibatch': configs.train_input.preprocessing == 'minibatch'}


def _compile(model, configs, total_steps):
  optimizer = optimization.build_optimizer(
      configs.optimizer, configs.schedule, total_steps,
      configs.runtime.precision_policy)
  model.compile(
      optimizer=optimizer,
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=['accuracy'],
      steps_per_execution=configs.trainer.steps_per_loop)


def _summary(name, configs, data, schedule, recorder_cb, seconds, model):
  counts, versions = device_info()
  final = dict(recorder_cb.last)
  return {
      'status': 'completed', 'config': name,
      'seed': configs.runtime.seed, 'steps': recorder_cb.step,
      'epochs': recorder_cb.step / schedule['steps_per_epoch'],
      'steps_per_epoch': schedule['steps_per_epoch'],
      'global_batch_size': schedule['global_batch_size'],
      'final': final,
      'final_validation_error': final.get('validation', {}).get('error'),
      'final_test_error': final.get('test', {}).get('error'),
      'best_validation_error': recorder_cb.recorder.best('validation'),
      'resumed_from_step': 0, 'train_seconds': seconds['train'],
      'wall_time_seconds': seconds['wall'],
      'model_params': model.count_params(), 'strategy': 'fit',
      'precision_policy': configs.runtime.precision_policy,
      'data_dir': configs.data.data_dir,
      'dataset_fingerprint': data.info['fingerprint'],
      'hardware': hardware.machine_info(counts, **versions),
  }


def _probe(configs, x, recorder, steps_per_epoch):
  """[the hidden-statistics recorder], or [] when `hidden_stats` is off."""
  every = configs.probe.every_steps
  if not every or 'validation' not in x:
    return []
  images = x['validation'][:configs.probe.probe_batch_size]
  if configs.train_input.preprocessing == 'minibatch':
    images = inputs.minibatch_standardize(images)  # As the TF path's probe.
  return [callbacks_lib.ProbeRecorder(recorder, images, every,
                                      steps_per_epoch)]


def run(model_dir, name, configs=None):
  """Trains one gin experiment with `model.fit`; returns the summary.

  Raises:
    DataError, ArgumentError, TrainingError: with messages that say the fix.
  """
  wall = time.monotonic()
  configs = configs or cfg.Configs.from_gin()
  records.prepare_model_dir(model_dir)
  if not _start_fresh(model_dir):
    return None
  keras.utils.set_random_seed(configs.runtime.seed)
  keras.config.set_dtype_policy(configs.runtime.precision_policy)
  data = prepare_data(configs)
  batch = configs.train_input.global_batch_size
  num_train = len(data.splits['train'][1])
  if num_train < batch:
    checks.fail('global_batch_size', batch, f'must not exceed the {num_train} '
                'training examples')
  steps_per_epoch = num_train // batch
  total_steps = configs.trainer.total_steps(steps_per_epoch)
  schedule = _schedule(configs, steps_per_epoch, total_steps)
  settings = cfg.run_settings(configs, data.info, steps_per_epoch,
                              total_steps)
  recorder = records.Recorder(model_dir, configs.runtime.seed, name)
  recorder.write_config(settings)
  fileio.atomic_write(os.path.join(model_dir, 'operative_config.gin'),
                      gin.operative_config_str())
  prep = configs.train_input.preprocessing
  x = {s: inputs.preprocess(images, prep, data.stats)
       for s, (images, _) in data.splits.items()}
  model = cfg.nin(num_classes=data.info['num_classes'],
                  input_shape=tuple(data.info['image_shape']))
  _compile(model, configs, total_steps)
  train = inputs.TrainBatches(
      x['train'], data.splits['train'][1], batch, configs.runtime.seed,
      total_steps, configs.train_input.augment, prep == 'minibatch',
      workers=4)
  progress = progress_lib.Progress(name, total_steps, steps_per_epoch)
  every = schedule['eval_every']
  progress.evals_left = -(-total_steps // every) if every else 1
  recorder_cb = callbacks_lib.RunRecorder(
      recorder, progress, schedule,
      {s: (x[s], data.splits[s][1]) for s in ('validation', 'test')
       if s in x})
  hooks = [recorder_cb] + _probe(configs, x, recorder, steps_per_epoch)
  logging.info('Training %s for %d steps (%d per epoch, global batch %d) on '
               'Keras %s (%s); model_dir=%s', name, total_steps,
               steps_per_epoch, batch, keras.__version__,
               keras.backend.backend(), model_dir)
  start = time.monotonic()
  model.fit(train, epochs=1, verbose=0, callbacks=hooks)
  train_seconds = time.monotonic() - start
  if 'test' in x and 'test' not in recorder_cb.last:
    recorder_cb.evaluate('test')
  serving = input_normalization.with_input_normalization(model, data.stats,
                                                         prep)
  _save(model, os.path.join(model_dir, CORE_MODEL_FILE))
  _save(serving or model, os.path.join(model_dir, MODEL_FILE))
  summary = _summary(name, configs, data, schedule, recorder_cb,
                     {'train': train_seconds,
                      'wall': time.monotonic() - wall}, model)
  recorder.write_summary(summary)
  recorder.close()
  logging.info('[%s] done: %d steps, validation error %.2f%%, test error '
               '%.2f%%, %s. Artifacts in %s', name, recorder_cb.step,
               100 * (summary['final_validation_error'] or float('nan')),
               100 * (summary['final_test_error'] or float('nan')),
               progress_lib.format_duration(summary['wall_time_seconds']),
               model_dir)
  return summary
