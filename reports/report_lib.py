"""Reads the plain run records of `reports/runs/` and computes statistics.

A run directory (written by `reports.run_protocol`) holds `metrics.jsonl`,
`summary.json`, `config.json` (the run's settings by component, with plain
keys), `operative_config.gin`, `flags.json`, and `exit_status` when the
training binary exited with an error. The report reads settings from
`config.json` only, never from gin's names. This module only reads them and
computes numbers (means and spreads over seeds, stable learning-rate ranges,
NormProp - BN differences); `report_plots` draws and `make_report` writes.

Everything iterates in sorted order, so the same records give the same
numbers, bit for bit.
"""

import dataclasses
import json
import math
import os
import re
import statistics

RECORD_FILES = ('metrics.jsonl', 'summary.json', 'config.json',
                'operative_config.gin', 'flags.json', 'exit_status')
SPEED_FILE = os.path.join('speed', 'step_time.jsonl')
# normprop_tf.train exits with status 1 on a user-facing TrainingError; in a
# run of this protocol that is the non-finite loss check (a diverged run).
DIVERGED_EXIT_STATUS = 1


def _read_json(path):
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def read_jsonl(path):
  """All rows of a JSON-lines file ([] if absent)."""
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


_OLD_GAP = re.compile(r'^hidden/([^/]+)/((?:output_)?gap_(?:mean|std))$')


def current_metric(metric):
  """A record's metric under today's names (docs/tensorboard.md).

  Records written before the tag vocabulary was unified call the
  statistics `hidden/<layer>/...`: the gaps are now `ics/<layer>/...` and
  the moments `stats/<layer>/...`, with the same values.
  """
  if not metric.startswith('hidden/'):
    return metric
  gap = _OLD_GAP.match(metric)
  if gap:
    return f'ics/{gap.group(1)}/{gap.group(2)}'
  return 'stats/' + metric[len('hidden/'):]


def _current_names(rows):
  for row in rows:
    row['metric'] = current_metric(row['metric'])
  return rows


@dataclasses.dataclass
class Run:
  """The records of one run directory."""
  name: str
  records: list
  summary: dict = None
  flags: dict = None
  config: dict = dataclasses.field(default_factory=dict)
  exit_status: int = None

  @property
  def status(self):
    """'completed', 'diverged', 'failed' or 'incomplete'."""
    if self.summary is not None and self.exit_status in (None, 0):
      return 'completed'
    if self.exit_status == DIVERGED_EXIT_STATUS:
      return 'diverged'
    if self.exit_status:
      return 'failed'
    return 'incomplete'

  @property
  def gin_file(self):
    """The run's gin file relative to the repository root, or None."""
    files = (self.flags or {}).get('gin_file') or []
    return files[0] if files else None

  @property
  def command(self):
    return (self.flags or {}).get('command')

  @property
  def seed(self):
    if self.summary and 'seed' in self.summary:
      return self.summary['seed']
    if self.records:
      return self.records[0].get('seed')
    return self.setting('runtime', 'seed')

  def setting(self, group, key, default=None):
    """A value of config.json, e.g. setting('optimizer', 'learning_rate')."""
    return self.config.get(group, {}).get(key, default)

  @property
  def code_version(self):
    return (self.flags or {}).get('code_version')

  @property
  def wall_seconds(self):
    return (self.summary or {}).get('wall_time_seconds')

  @property
  def train_seconds(self):
    return (self.summary or {}).get('train_seconds')

  @property
  def hardware(self):
    return (self.summary or {}).get('hardware')

  def series(self, split, metric):
    """[(step, epoch, value)] of one metric, sorted by step."""
    return sorted((r['step'], r['epoch'], r['value']) for r in self.records
                  if r['split'] == split and r['metric'] == metric)

  def last(self, split, metric):
    """(step, value) of the last record of a metric, or None."""
    points = self.series(split, metric)
    return (points[-1][0], points[-1][2]) if points else None

  def final_error(self, split):
    """The final error on 'validation' or 'test' (completed runs only)."""
    if self.status != 'completed':
      return None
    return self.summary.get('final', {}).get(split, {}).get('error')

  def last_step(self):
    return max((r['step'] for r in self.records), default=None)

  def probe_layers(self):
    """Hidden layers with probe records, e.g. ['conv1', ..., 'conv8']."""
    names = {r['metric'].split('/')[1] for r in self.records
             if r['split'] == 'probe' and r['metric'].startswith('ics/') and
             r['metric'].endswith('/gap_mean') and
             not r['metric'].startswith('ics/mean_over_layers/')}
    return sorted(names, key=lambda n: (len(n), n))


def load_run(path):
  name = os.path.basename(os.path.normpath(path))
  config = _read_json(os.path.join(path, 'config.json')) or {}
  exit_status = None
  status_path = os.path.join(path, 'exit_status')
  if os.path.exists(status_path):
    with open(status_path, encoding='utf-8') as f:
      exit_status = int(f.read().strip())
  return Run(name=name,
             records=_current_names(
                 read_jsonl(os.path.join(path, 'metrics.jsonl'))),
             summary=_read_json(os.path.join(path, 'summary.json')),
             flags=_read_json(os.path.join(path, 'flags.json')),
             config=config, exit_status=exit_status)


def load_runs(runs_dir):
  """{name: Run} of every run directory under `runs_dir`, in sorted order."""
  runs = {}
  if not os.path.isdir(runs_dir):
    return runs
  for name in sorted(os.listdir(runs_dir)):
    path = os.path.join(runs_dir, name)
    if os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f)) for f in RECORD_FILES):
      runs[name] = load_run(path)
  return runs


# Release 0.1's benchmark called the plain network 'none'.
_LEGACY_VARIANTS = {'none': 'plain'}


def load_speed(runs_dir):
  """The rows of benchmarks.step_time --records_file ([] if absent)."""
  rows = read_jsonl(os.path.join(runs_dir, SPEED_FILE))
  for row in rows:
    if 'variant' in row:
      row['variant'] = _LEGACY_VARIANTS.get(row['variant'], row['variant'])
  return rows


# ---- statistics -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spread:
  """Mean and spread of a few values (one per seed)."""
  n: int
  mean: float
  lo: float
  hi: float
  std: float  # Sample standard deviation; 0 for a single value.


def spread(values):
  """Spread of the values that are not None, or None if there are none."""
  values = [float(v) for v in values if v is not None]
  if not values:
    return None
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return Spread(len(values), math.fsum(values) / len(values), min(values),
                max(values), std)


def paired_difference(a, b):
  """Spread of a[seed] - b[seed] over the seeds both {seed: value} have."""
  seeds = sorted(s for s in a if s in b and a[s] is not None
                 and b[s] is not None)
  return spread([a[s] - b[s] for s in seeds])


def stable_range(statuses):
  """The widest run of consecutive learning rates that trained.

  Args:
    statuses: {learning_rate: status}, status as `Run.status`.

  Returns:
    (lowest, highest) learning rate of the longest block of consecutive
    (in sorted order) 'completed' rates, the lower block on a tie; None if
    none completed. Rates with other statuses break a block.
  """
  best, current = None, []
  for lr in sorted(statuses):
    if statuses[lr] == 'completed':
      current.append(lr)
      if best is None or len(current) > len(best):
        best = list(current)
    else:
      current = []
  return (best[0], best[-1]) if best else None


def mean_curve(curves):
  """Pointwise spread of several [(x, y)] curves over their common xs.

  Returns:
    [(x, Spread)] sorted by x, over the xs every curve has.
  """
  if not curves:
    return []
  maps = [dict(c) for c in curves]
  xs = sorted(set.intersection(*[set(m) for m in maps]))
  return [(x, spread([m[x] for m in maps])) for x in xs]


def layer_average(run, metric):
  """[(step, mean over hidden layers of ics/<layer>/<metric>)]."""
  by_step = {}
  for layer in run.probe_layers():
    for step, _, value in run.series('probe', f'ics/{layer}/{metric}'):
      by_step.setdefault(step, []).append(value)
  return [(step, math.fsum(v) / len(v)) for step, v in sorted(by_step.items())]


# ---- formatting -------------------------------------------------------------


def pct(value, digits=2):
  """An error fraction as a percentage string; '-' for None."""
  return '-' if value is None else f'{100 * value:.{digits}f}'


def pct_spread(s, digits=2):
  """'mean (min-max)' in percent, or the value alone for one seed."""
  if s is None:
    return '-'
  if s.n == 1:
    return pct(s.mean, digits)
  return (f'{pct(s.mean, digits)} ({pct(s.lo, digits)} to '
          f'{pct(s.hi, digits)})')


def signed_pct(value, digits=2):
  return '-' if value is None else f'{100 * value:+.{digits}f}'


def duration(seconds):
  """'1 h 02 min', '3 min 05 s' or '42 s'; '-' for None."""
  if seconds is None:
    return '-'
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f'{seconds // 3600} h {seconds % 3600 // 60:02d} min'
  if seconds >= 60:
    return f'{seconds // 60} min {seconds % 60:02d} s'
  return f'{seconds} s'


def hardware_string(hardware):
  """'AMD EPYC (family 25 model 17; avx2, avx512f), 2 cores, TF 2.21.0'."""
  if not hardware:
    return '-'
  devices = hardware.get('logical_devices') or {}
  accel = ', '.join(f'{n} {d}' for d, n in sorted(devices.items())
                    if d != 'CPU')
  if accel and hardware.get('device_kind'):
    accel += f' ({hardware["device_kind"]})'
  detail = []
  if hardware.get('cpu_family'):
    detail.append(f'family {hardware["cpu_family"]} model '
                  f'{hardware.get("cpu_model")}')
  if hardware.get('cpu_flags'):
    detail.append(', '.join(hardware['cpu_flags']))
  cpu = hardware.get('cpu', '?') + (f' ({"; ".join(detail)})' if detail
                                     else '')
  backend = (f'TF {hardware["tensorflow"]}' if hardware.get('tensorflow') else
             f'Keras {hardware.get("keras", "?")} on '
             f'{hardware.get("keras_backend", "?")} '
             f'{hardware.get(hardware.get("keras_backend", ""), "")}'.rstrip())
  text = f'{cpu}, {hardware.get("cpu_count", "?")} cores, {backend}'
  return text + (f', {accel}' if accel else '')


def divergence_window(run):
  """'steps a-b': where the loss became non-finite, from the train logs."""
  steps = [step for step, _, _ in run.series('train', 'loss')]
  start = steps[-1] if steps else 0
  # The logging cadence, read off the records: the first logged step.
  every = steps[0] if steps else 0
  if not every:
    return f'after step {start}'
  return f'non-finite loss in steps {start + 1}-{start + every}'
