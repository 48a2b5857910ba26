"""What defines a run, and the check that a rerun asks for the same one.

`config.json` (written when a run starts) records the run's settings by
component. The parts below define the run: the model, the optimizer and its
schedule, the data (its fingerprint, not its path), the training input,
the seed and precision, and the length. Resuming from a checkpoint with any
of them changed would train a different run on top of the old weights (or
fail on a shape mismatch), so `check_resume` stops it with one line naming
each difference. Cadence and logging (`trainer` intervals, `hidden_stats`,
`eval/input_pipeline`) may change between reruns.
"""

import hashlib
import json
import os

from normprop_tf.training import errors
from normprop_tf.training import records
from normprop_tf.utils import fileio

# {config.json group: the keys that define the run (None: every key)}.
DEFINING = {
    'model': None,
    'optimizer': None,
    'lr_schedule': None,
    'data': ('name', 'fingerprint', 'num_train', 'validation_size',
             'subset_per_class', 'zca_epsilon', 'jpeg_idct'),
    'train_input': ('global_batch_size', 'preprocessing', 'augment',
                    'shard_by'),
    'runtime': ('seed', 'precision_policy'),
    'length': ('total_steps', 'steps_per_epoch'),
}


def defining(settings):
  """{'group.key': JSON text of the value} of the defining settings."""
  flat = {}
  for group, keys in DEFINING.items():
    values = settings.get(group, {})
    for key in sorted(values if keys is None else keys):
      if key in values:
        flat[f'{group}.{key}'] = json.dumps(values[key], sort_keys=True)
  return flat


def run_name(model_dir):
  """The run's name on the console and in TensorBoard: model_dir's basename."""
  return os.path.basename(os.path.normpath(model_dir)) or model_dir


def trial_id(model_dir, settings):
  """The run's HParams trial: '<run name>-<digest of its defining settings>'.

  Two runs of one gin file that differ by a binding (a seed, a learning
  rate) are two trials, and so are two runs in different directories.
  """
  text = json.dumps(defining(settings), sort_keys=True)
  return f'{run_name(model_dir)}-{hashlib.sha256(text.encode()).hexdigest()[:8]}'


def differences(old, new):
  """['model.width: 0.25 -> 0.5', ...] between two config.json dicts."""
  a, b = defining(old), defining(new)
  return [f'{k}: {a.get(k, "(unset)")} -> {b.get(k, "(unset)")}'
          for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def check_resume(model_dir, settings):
  """Raises RunMismatchError if model_dir's run is not the requested one.

  Only when model_dir holds a config.json; the caller checks that it holds
  a checkpoint to resume from.
  """
  path = os.path.join(model_dir, records.CONFIG_FILE)
  if not fileio.exists(path):
    return
  with fileio.open_file(path) as f:
    old = json.load(f)
  diff = differences(old, settings)
  if diff:
    raise errors.RunMismatchError(
        f'{model_dir} holds checkpoints of another run; resuming would train '
        f'it with other settings ({"; ".join(diff)}). Rerun with the '
        'settings it was started with, or give a new --model_dir.')
