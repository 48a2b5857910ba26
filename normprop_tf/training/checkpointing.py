"""Step-level checkpoints that survive `kill -9`: `Checkpointer`.

A checkpoint holds all of the model's variables (weights, BatchNorm moving
statistics, the dropout layers' RNG states), the optimizer's (iteration
count, momentum, loss scale),
the global step and the accumulated training seconds. The data position is
not stored: the input pipeline is a deterministic function of (seed, global
step), so a resumed run re-creates it and skips the consumed batches (see
`train_lib`).

Why this survives a SIGKILL at any moment: `tf.train.CheckpointManager`
writes the data and index files under temporary names and renames them,
and only then rewrites the small `checkpoint` state file atomically. A kill
during a save leaves the previous checkpoint as the latest one.

Multi-worker rule (tf.distribute): every worker must take part in a save,
but only the chief's files are kept. Other workers write to a temporary
directory that is deleted after each save, and everybody restores from the
chief's directory.
"""

import os

from absl import logging
import tensorflow as tf

CHECKPOINT_SUBDIR = 'checkpoints'


class Checkpointer:
  """Saves and restores (model, optimizer, step, train_seconds).

  Create it inside `strategy.scope()`.

  Args:
    model_dir: the run directory; checkpoints go to `model_dir/checkpoints`.
    model: the Keras model.
    optimizer: its optimizer (built).
    is_chief: whether this process keeps its checkpoint files.
    worker_id: this worker's index, for the temporary directory name.
    max_to_keep: how many recent checkpoints to keep.
  """

  def __init__(self, model_dir, model, optimizer, is_chief=True, worker_id=0,
               max_to_keep=3):
    self.directory = os.path.join(model_dir, CHECKPOINT_SUBDIR)
    self.is_chief = is_chief
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False,
                            name='global_step')
    self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False,
                                     name='train_seconds')
    # Keras 3 does not expose every variable as a checkpoint dependency of
    # the model: the dropout layers' SeedGenerator states are missing from
    # `tf.train.Checkpoint(model=model)`, and a resumed run would then draw
    # other dropout masks. Listing all variables explicitly covers them
    # (objects reachable twice are still saved once).
    self.checkpoint = tf.train.Checkpoint(
        model=model, optimizer=optimizer, step=self.step,
        train_seconds=self.train_seconds,
        model_variables=list(model.variables),
        optimizer_variables=list(optimizer.variables))
    write_dir = self.directory if is_chief else os.path.join(
        self.directory, f'tmp_worker_{worker_id}')
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, write_dir, max_to_keep=max_to_keep,
        checkpoint_name='ckpt')
    self.last_saved_step = None

  def latest(self):
    """Path of the chief's latest checkpoint, or None."""
    return tf.train.latest_checkpoint(self.directory)

  def remove_leftovers(self):
    """Deletes the temporary files of a save that a kill interrupted."""
    if not self.is_chief or not tf.io.gfile.isdir(self.directory):
      return []
    removed = []
    for name in tf.io.gfile.listdir(self.directory):
      if '_temp' in name or name.startswith('tmp_worker_'):
        path = os.path.join(self.directory, name.rstrip('/'))
        if tf.io.gfile.isdir(path):
          tf.io.gfile.rmtree(path)
        else:
          tf.io.gfile.remove(path)
        removed.append(name)
    if removed:
      logging.info('Removed %s, left by an interrupted save.',
                   ', '.join(removed))
    return removed

  def restore(self):
    """Restores the latest checkpoint; returns (step, train_seconds).

    Returns (0, 0.0) and leaves the fresh initialization when there is no
    checkpoint yet. Temporary files of an interrupted save are removed first.
    """
    self.remove_leftovers()
    path = self.latest()
    if path is None:
      return 0, 0.0
    # assert_existing_objects_matched: every variable of the model and the
    # optimizer must come from the checkpoint (a config that changed the
    # architecture fails here, loudly, instead of training half-restored).
    self.checkpoint.restore(path).assert_existing_objects_matched()
    step = int(self.step.numpy())
    self.last_saved_step = step
    logging.info('Restored %s (step %d).', path, step)
    return step, float(self.train_seconds.numpy())

  def save(self, step, train_seconds):
    """Saves at `step`; returns the chief's checkpoint path."""
    self.step.assign(step)
    self.train_seconds.assign(train_seconds)
    path = self.manager.save(checkpoint_number=step)
    if not self.is_chief:
      tf.io.gfile.rmtree(self.manager.directory)
    self.last_saved_step = step
    return path
