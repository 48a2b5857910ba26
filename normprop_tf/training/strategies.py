"""tf.distribute strategies by name, created once by the entry point.

    strategy = strategies.create_strategy('mirrored')

Names (`STRATEGIES`):
- 'default': TensorFlow's default strategy (one device; no-op scope).
- 'mirrored': `MirroredStrategy` over all local GPUs, or over `devices`.
- 'multi_worker': `MultiWorkerMirroredStrategy`; the cluster comes from the
  `TF_CONFIG` environment variable, which must be set.
- 'tpu': `TPUStrategy`. `tpu_address` is a Cloud TPU name, 'local' (TPU VM)
  or a 'grpc://host:port' address. The TPU system is connected and
  initialized here, before any other TensorFlow op runs, as TPUs require.

Asking for a TPU where there is none fails within seconds with a
`StrategyError`, never a hang: a 'grpc://' address is probed with a TCP
connection (timeout `connect_timeout`) before TensorFlow dials it.
"""

import json
import os
import socket
import urllib.parse

from absl import logging
import tensorflow as tf

from normprop_tf.training import errors

STRATEGIES = ('default', 'mirrored', 'multi_worker', 'tpu')
# Longer than any step, evaluation or checkpoint save, and than the time the
# chief spends alone (hidden-layer statistics, records) between collectives.
COLLECTIVE_TIMEOUT_SECONDS = 300.0
# What a collective op raises when a peer worker dies (Unavailable: its
# connection closed), stops answering (DeadlineExceeded: the timeout above)
# or fails first (Aborted/Cancelled: the cluster aborted the collectives).
CLUSTER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                  tf.errors.AbortedError, tf.errors.CancelledError)


def create_strategy(name='default', tpu_address=None, devices=None,
                    connect_timeout=10.0,
                    collective_timeout=COLLECTIVE_TIMEOUT_SECONDS):
  """Returns the `tf.distribute.Strategy` called `name`.

  Args:
    name: one of `STRATEGIES`.
    tpu_address: for 'tpu' only: a Cloud TPU name, 'local' or
      'grpc://host:port'. None lets `TPUClusterResolver` look it up (the
      TPU_NAME environment variable on Cloud).
    devices: for 'mirrored' only: device strings; None uses every GPU (or
      the CPU when there is none).
    connect_timeout: seconds to wait for a 'grpc://' TPU address to answer.
    collective_timeout: for 'multi_worker' only: seconds after which a
      collective op (gradient all-reduce, metric reduction) that a peer
      never joins fails with DeadlineExceededError instead of hanging (a
      peer that is stopped or partitioned rather than dead; a dead peer's
      closed connection fails the op at once). None: wait forever.

  Raises:
    StrategyError: unknown name, 'multi_worker' without TF_CONFIG, or no
      reachable TPU.
  """
  if name not in STRATEGIES:
    raise errors.StrategyError(
        f'Unknown strategy {name!r}. Choose one of {STRATEGIES} '
        f'(gin: strategy.name). Received: name={name!r}')
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    return tf.distribute.MirroredStrategy(devices=devices)
  if name == 'multi_worker':
    if not os.environ.get('TF_CONFIG'):
      raise errors.StrategyError(
          "strategy.name='multi_worker' reads the cluster from the TF_CONFIG "
          'environment variable, which is not set. Set it on every worker, '
          'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", '
          '"host2:12345"]}, "task": {"type": "worker", "index": 0}}\'.')
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout))
  return _tpu_strategy(tpu_address, connect_timeout)


def _tpu_strategy(tpu_address, connect_timeout):
  """Connects to and initializes the TPU system, then builds TPUStrategy."""
  where = f'tpu_address={tpu_address!r}'
  hint = ("Give a reachable TPU with strategy.tpu_address (a Cloud TPU "
          "name, 'local' on a TPU VM, or 'grpc://host:8470'), or train without "
          "one: strategy.name='default' (or 'mirrored' for local GPUs).")
  if tpu_address and tpu_address.startswith('grpc://'):
    parsed = urllib.parse.urlparse(tpu_address)
    try:
      with socket.create_connection((parsed.hostname, parsed.port or 8470),
                                    timeout=connect_timeout):
        pass
    except (OSError, ValueError) as e:
      raise errors.StrategyError(
          f"strategy.name='tpu' was requested, but nothing answers at "
          f'{where} ({e}). {hint}') from None
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu=tpu_address)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, RuntimeError, tf.errors.OpError) as e:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else (
        type(e).__name__)
    raise errors.StrategyError(
        f"strategy.name='tpu' was requested, but no TPU was found "
        f'({where}): {first_line[:300].rstrip(".")}. {hint}') from None
  strategy = tf.distribute.TPUStrategy(resolver)
  logging.info('TPU system initialized: %d cores.',
               strategy.num_replicas_in_sync)
  return strategy


def strategy_name(strategy):
  """A short name of a strategy instance, for records."""
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return 'tpu'
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return 'multi_worker'
  if isinstance(strategy, tf.distribute.MirroredStrategy):
    return 'mirrored'
  return 'default'


def worker_info(strategy):
  """(task_type, task_id) of this process; (None, 0) without a cluster."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  task_type = getattr(resolver, 'task_type', None) if resolver else None
  task_id = getattr(resolver, 'task_id', None) if resolver else None
  if task_type is None and os.environ.get('TF_CONFIG') and isinstance(
      strategy, tf.distribute.MultiWorkerMirroredStrategy):
    task = json.loads(os.environ['TF_CONFIG']).get('task', {})
    task_type, task_id = task.get('type'), task.get('index')
  return task_type, int(task_id or 0)


def is_chief(strategy):
  """Whether this process writes summaries, records, configs and the model.

  The chief is the 'chief' task, or worker 0 of a cluster without one, or
  the only process of a single-host strategy.
  """
  task_type, task_id = worker_info(strategy)
  if task_type in (None, 'chief'):
    return True
  if task_type != 'worker' or task_id != 0:
    return False
  resolver = getattr(strategy, 'cluster_resolver', None)
  try:
    cluster = resolver.cluster_spec().as_dict() if resolver else {}
  except (ValueError, RuntimeError):
    cluster = {}
  return 'chief' not in cluster


def check_global_batch(strategy, global_batch_size, drop_remainder):
  """Checks that a global batch can be split over the strategy's replicas.

  Every replica gets global_batch_size / num_replicas examples, so the
  global batch must be divisible by the replica count. TPUs also need static
  shapes (drop_remainder=True) and a per-core batch that is a multiple of
  8, i.e. a global batch divisible by 8 x cores.

  Raises:
    ValueError: naming the value and the fix.
  """
  replicas = strategy.num_replicas_in_sync
  if global_batch_size % replicas:
    raise ValueError(
        f'The global batch size must be divisible by the {replicas} replicas '
        f'of the {strategy_name(strategy)!r} strategy. Received: '
        f'global_batch_size={global_batch_size}')
  if isinstance(strategy, tf.distribute.TPUStrategy):
    if not drop_remainder:
      raise ValueError(
          'TPUs need static shapes: the training dataset must use '
          'drop_remainder=True. Received: drop_remainder=False')
    if (global_batch_size // replicas) % 8:
      raise ValueError(
          f'On TPU the global batch size must be divisible by 8 x '
          f'{replicas} cores = {8 * replicas} (a per-core batch that is a '
          'multiple of 8 fills the TPU matrix units; other sizes are padded '
          'or fail to compile). Scale optimizer.learning_rate with it. Received: '
          f'global_batch_size={global_batch_size}')


def cluster_failure(error, strategy, checkpoint_dir):
  """A `StrategyError` explaining a lost multi-worker peer, else None.

  Args:
    error: a `tf.errors.OpError` raised while training.
    strategy: the run's strategy (None if it was not created).
    checkpoint_dir: where the chief's checkpoints are (for the message).

  Returns:
    None when `error` is not a collective failure of a multi-worker run
    (the caller re-raises it); otherwise the error to report: a worker died
    or stopped answering, this one stops too, and restarting every worker
    with the same command resumes from the latest checkpoint.
  """
  if not isinstance(error, CLUSTER_ERRORS) or not isinstance(
      strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return None
  task_type, task_id = worker_info(strategy)
  detail = next((line.strip() for line in str(error).splitlines()
                 if 'aborted' in line.lower() or 'timed out' in line.lower()
                 or 'deadline' in line.lower()), '')
  latest = tf.train.latest_checkpoint(checkpoint_dir)
  resume = (f'the latest checkpoint, {latest}' if latest else
            'the start (no checkpoint was written yet)')
  return errors.StrategyError(
      f'Lost contact with another worker of the multi_worker cluster '
      f'({type(error).__name__}{": " + detail[:300] if detail else ""}); '
      f'this worker ({task_type} {task_id}) stops too: a worker died or '
      'stopped answering. Restart every worker with the same command and '
      f'TF_CONFIG: training resumes from {resume}.')


def worker_count(strategy):
  """How many worker processes take part (1 without a cluster)."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or (
      resolver is None):
    return 1
  try:
    return max(1, len(resolver.cluster_spec().as_dict().get('worker', [])) +
               len(resolver.cluster_spec().as_dict().get('chief', [])))
  except (ValueError, RuntimeError):
    return 1


def flag_reducer(strategy):
  """A function bool -> bool: whether any worker's flag is set; None alone.

  Several workers must stop after the same step (a preemption signal reaches
  one of them): the 0/1 flags are all-reduced with SUM (tf.distribute
  reduces only by SUM or MEAN), once per call, by every worker; any set flag
  makes the sum positive. Without a cluster there is nothing to agree on.
  """
  if worker_count(strategy) < 2:
    return None

  @tf.function
  def reduce_sum(flag):
    value = strategy.run(lambda f: f, args=(flag,))
    return strategy.reduce('SUM', value, axis=None)

  return lambda flag: bool(reduce_sum(tf.constant(1.0 if flag else 0.0)) > 0)
