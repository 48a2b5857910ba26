"""The training loop: cadence, evaluation, the non-finite guard, checkpoints.

`Trainer(experiment).train()` trains a built `Experiment` from its restored
step to the end, and writes its records and final model.

Why a custom loop instead of `model.fit`: it buys exact step-level resume.
Keras 3.15's `BackupAndRestore(save_freq=N)` saves mid-epoch weights but
restores only the epoch counter, so a run killed mid-epoch replays that
epoch's first batches on top of weights that already learned from them. Here
the checkpoint holds the global step, and the input is a deterministic
function of (seed, step): one seeded, repeated pipeline whose epoch e is
shuffled by the e-th draw of the seeded shuffle, with augmentation keyed by
the batch index. A resumed run rebuilds it and skips the `step` consumed
batches (`builders.build_input(skip=)`), so it neither repeats nor skips a
step. The same loop checks every step's loss before anything is
checkpointed, which is what lets a NaN stop the run with the last good
checkpoint intact.

Cadence: every call of the compiled loop runs up to `steps_per_loop` steps
and ends at the next logging, statistics, evaluation or checkpoint
boundary, so those happen at exact steps whatever `steps_per_loop` is.
"""

import math
import time

from absl import logging
import numpy as np
import tensorflow as tf

from normprop_tf.training import artifacts
from normprop_tf.training import builders
from normprop_tf.training import errors
from normprop_tf.training import preemption
from normprop_tf.training import progress as progress_lib
from normprop_tf.training import records
from normprop_tf.training import steps as steps_lib
from normprop_tf.training import strategies
from normprop_tf.training import summaries


def _to_boundary(step, every):
  """Steps from `step` to the next multiple of `every` (inf when off)."""
  return every - step % every if every else math.inf


def _at(step, every, total_steps):
  return step == total_steps or bool(every and step % every == 0)


def _percent(value):
  return 'n/a' if value is None else f'{100 * value:.2f}%'


class Trainer:
  """Runs the loop of one `experiment.Experiment`.

  Args:
    experiment: what `experiment.build` returned.
    watcher: a `preemption.Watcher` (SIGTERM/SIGINT: checkpoint, stop), or
      None.
  """

  def __init__(self, experiment, watcher=None):
    e = self.e = experiment
    self.watcher = watcher
    self._agree = strategies.flag_reducer(e.strategy)
    cfg = self.cfg = experiment.configs.trainer
    self.batch = e.configs.train_input.global_batch_size
    self.eval_every = (e.steps_per_epoch if cfg.eval_every_steps is None else
                       cfg.eval_every_steps)
    self.stats_every = e.configs.probe.every_steps
    self.train_loop = steps_lib.make_train_loop(e.strategy, e.model,
                                                e.optimizer, self.batch)
    self.eval_step = steps_lib.make_eval_step(e.strategy, e.model)
    self.all_finite = steps_lib.make_finite_check(e.model)
    self.recorder = records.Recorder(
        e.model_dir, e.configs.runtime.seed, e.name, enabled=e.is_chief,
        events=summaries.EventWriters(e.model_dir, enabled=e.is_chief))
    self.progress = progress_lib.Progress(e.run_name, e.total_steps,
                                          e.steps_per_epoch)
    self.step = e.start_step
    self.last = {}  # The latest evaluation of each split.

  def train(self):
    """Trains to the end; returns the summary written to summary.json."""
    wall_start = time.monotonic()
    self._start()
    if self.watcher is not None:
      self.watcher.in_loop = True  # From now on a signal saves, then stops.
    loop_seconds = self._loop()
    final = self._final_evaluation()
    if self.e.is_chief:
      artifacts.save_model(self.e.model, self.e.model_dir,
                           self.e.configs.data.data_dir,
                           self.e.configs.train_input.preprocessing)
    summary = self._summary(final, self.e.train_seconds + loop_seconds,
                            time.monotonic() - wall_start)
    self.recorder.write_summary(summary)
    self.recorder.close()
    logging.info('[%s] done: %d steps, validation error %s, test error %s, '
                 '%s wall time. Artifacts in %s', self.e.run_name, self.step,
                 _percent(summary['final_validation_error']),
                 _percent(summary['final_test_error']),
                 progress_lib.format_duration(summary['wall_time_seconds']),
                 self.e.model_dir)
    return summary

  def _start(self):
    e = self.e
    self.recorder.truncate_after(e.start_step)
    if e.is_chief:
      if e.start_step < e.total_steps:  # They would describe an older state.
        artifacts.remove_final(e.model_dir)
      self.recorder.write_config(e.settings)
      artifacts.write_run_header(
          self.recorder.writer(''), e.model_dir, e.trial_id, e.start_step,
          artifacts.flat_hparams(e.settings))
      if e.hidden_stats is not None:
        self.recorder.events.custom_scalars(e.hidden_stats.unit_names)
    evals = [s for s in range(e.start_step + 1, e.total_steps + 1)
             if _at(s, self.eval_every, e.total_steps)]
    self.progress.evals_left = len(evals) if e.eval_split else 0
    if e.start_step >= e.total_steps:
      logging.info('Checkpoint step %d >= %d training steps: nothing to '
                   'train; evaluating and saving.', e.start_step,
                   e.total_steps)
    elif e.start_step:
      logging.info('Resuming at step %d of %d (epoch %.2f): skipping the %d '
                   'batches already consumed.', e.start_step, e.total_steps,
                   e.start_step / e.steps_per_epoch, e.start_step)
    else:
      logging.info('Training %s (%s) for %d steps (%d per epoch, global '
                   'batch %d, %d replica(s)); model_dir=%s', e.run_name,
                   e.name, e.total_steps,
                   e.steps_per_epoch, self.batch,
                   e.strategy.num_replicas_in_sync, e.model_dir)
    if e.hidden_stats is not None and self.step == 0:
      self._write_hidden_stats()  # The statistics at initialization.

  def _next_chunk(self):
    """Steps until the next boundary (at most `steps_per_loop`)."""
    return int(min(self.cfg.steps_per_loop, self.e.total_steps - self.step,
                   _to_boundary(self.step, self.cfg.log_every_steps),
                   _to_boundary(self.step, self.stats_every),
                   _to_boundary(self.step, self.eval_every),
                   _to_boundary(self.step, self.cfg.checkpoint_every_steps)))

  def _loop(self):
    """Trains to `total_steps`; returns the seconds spent."""
    e, cfg = self.e, self.cfg
    loop_start = time.monotonic()
    window = steps_lib.Window(self.batch)
    iterator = iter(e.train_data)
    while self.step < e.total_steps:
      num_steps = self._next_chunk()
      chunk_start = time.perf_counter()
      losses, corrects = self.train_loop(iterator, tf.constant(num_steps))
      losses, corrects = losses.numpy(), corrects.numpy()
      chunk_seconds = time.perf_counter() - chunk_start
      self._check_losses(losses)
      if self.step == e.start_step:
        logging.info('First training call (tracing%s) took %.1f s.',
                     ' and input skip' if e.start_step else '', chunk_seconds)
      window.add(losses, corrects, chunk_seconds,
                 timed=self.step > e.start_step)
      self.step += num_steps
      if _at(self.step, cfg.log_every_steps, e.total_steps):
        self._log(window)
        window = steps_lib.Window(self.batch)
      if e.hidden_stats is not None and _at(self.step, self.stats_every,
                                            e.total_steps):
        self._write_hidden_stats()
      if e.eval_data is not None and _at(self.step, self.eval_every,
                                         e.total_steps):
        self._periodic_evaluation()
      seconds = e.train_seconds + (time.monotonic() - loop_start)
      if _at(self.step, cfg.checkpoint_every_steps, e.total_steps):
        self._checkpoint(seconds)
      if self._stop_requested():
        self._save_and_stop(seconds)
    return time.monotonic() - loop_start

  def _stop_requested(self):
    """Whether any worker got SIGTERM/SIGINT (all agree on the answer)."""
    local = self.watcher is not None and self.watcher.requested
    return self._agree(local) if self._agree else local

  def _save_and_stop(self, train_seconds):
    if self.e.checkpointer.last_saved_step != self.step:
      self._checkpoint(train_seconds)
    self.recorder.close()
    name = (self.watcher.signal_name if self.watcher and
            self.watcher.signal_name else 'SIGTERM')
    raise errors.PreemptedError(
        preemption.stopped_message(name, self.step,
                                   self.e.checkpointer.directory),
        self.step, name)

  def _check_losses(self, losses):
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
      self.recorder.flush()
      raise self._non_finite(f'Training loss is {losses[bad[0]]} at',
                             self.step + int(bad[0]) + 1)

  def _log(self, window):
    metrics = window.metrics()
    metrics['learning_rate'] = builders.current_learning_rate(
        self.e.optimizer)
    self.recorder.scalars('train', self.step, self._epoch(), metrics)
    self.progress.update_speed(metrics['sec_per_step'])
    self.progress.log(self.step, metrics)

  def _epoch(self):
    return self.step / self.e.steps_per_epoch

  def _write_hidden_stats(self):
    scalars, histograms = self.e.hidden_stats.compute()
    self.recorder.scalars('probe', self.step, self._epoch(), scalars)
    if self.recorder.enabled:
      self.recorder.events.histograms('probe', self.step, histograms)

  def _evaluate(self, split, data):
    metrics, seconds = steps_lib.evaluate(self.eval_step, data)
    self.recorder.scalars(split, self.step, self._epoch(), metrics)
    logging.info('[%s] %s at step %d: loss %.4f error %.2f%% (%.1f s)',
                 self.e.run_name, split, self.step, metrics['loss'],
                 100 * metrics['error'], seconds)
    self.last[split] = metrics
    return seconds

  def _periodic_evaluation(self):
    self.progress.eval_seconds = self._evaluate(self.e.eval_split,
                                                self.e.eval_data)
    self.progress.evals_left -= 1
    if self.cfg.eval_test and self.e.test_data is not None:
      self.progress.eval_seconds += self._evaluate('test', self.e.test_data)

  def _checkpoint(self, train_seconds):
    # A finite loss at this step says nothing about the weights it produced:
    # check them, so the last checkpoint is always a good one.
    if not bool(self.all_finite()):
      self.recorder.flush()
      raise self._non_finite('Some weights are NaN or infinite after',
                             self.step)
    # Records first: a kill between the two leaves records that the resumed
    # run truncates, never a checkpoint without its records.
    self.recorder.flush()
    self.e.checkpointer.save(self.step, train_seconds)

  def _final_evaluation(self):
    """The last validation and test results (reused when just computed)."""
    e, final = self.e, {}
    for split, data in ((e.eval_split, e.eval_data), ('test', e.test_data)):
      if data is None:
        continue
      if split not in self.last:
        self._evaluate(split, data)
      final[split] = self.last[split]
    return final

  def _summary(self, final, train_seconds, wall_seconds):
    e = self.e
    return {
        'status': 'completed',
        'config': e.name,
        'run': e.run_name,
        'trial_id': e.trial_id,
        'seed': e.configs.runtime.seed,
        'steps': self.step,
        'epochs': self.step / e.steps_per_epoch,
        'steps_per_epoch': e.steps_per_epoch,
        'global_batch_size': self.batch,
        'final': final,
        'final_validation_error': final.get(e.eval_split or '', {}).get(
            'error'),
        'final_test_error': final.get('test', {}).get('error'),
        'best_validation_error': self.recorder.best(e.eval_split),
        'resumed_from_step': e.start_step,
        'train_seconds': train_seconds,
        'wall_time_seconds': wall_seconds,
        'model_params': e.model.count_params(),
        'strategy': strategies.strategy_name(e.strategy),
        'precision_policy': e.configs.runtime.precision_policy,
        'data_dir': e.configs.data.data_dir,
        'dataset_fingerprint': e.info.get('fingerprint'),
        'hardware': summaries.hardware_info(e.strategy),
    }

  def _non_finite(self, what, step):
    checkpointer = self.e.checkpointer
    last = checkpointer.last_saved_step
    kept = (f'The last good checkpoint (step {last}) in '
            f'{checkpointer.directory} is intact; the same command resumes '
            'from it, and diverges again unless the config changes.'
            if last is not None else 'No checkpoint had been written yet.')
    return errors.NonFiniteLossError(
        f'{what} step {step} (epoch {step / self.e.steps_per_epoch:.2f}). '
        f'Training stopped without saving. {kept} Try a smaller learning '
        'rate (now optimizer.learning_rate='
        f'{self.e.configs.optimizer.learning_rate}); NormProp\'s stable range '
        'must be measured (docs/method.md, "Learning rate").', step=step,
        checkpoint_step=last)
