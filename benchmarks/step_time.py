r"""Train-step and inference throughput of NIN: NormProp vs BN vs WN vs plain.

    python -m benchmarks.step_time [--widths=1.0,0.5] [--batch_sizes=1,50,128]
        [--repetitions=5] [--inference_repetitions=11]
        [--report=reports/perf.md]
        [--records_file=reports/runs/speed/step_time.jsonl]

All variants run in one process, interleaved (variant order rotates every
repetition), after warm-up; each cell is the median of `--repetitions`
(inference: `--inference_repetitions`) timings of `--steps` steps. Training steps are `benchmarks.harness.Trainer`
(a compiled forward/backward/SGD-momentum step called from Python, as the
training loop does; no XLA; why not `model.fit`: see there) on one
in-memory batch, so the input pipeline costs nothing. Inference uses
`model.predict_on_batch`-style compiled calls, also for the folded NormProp
and folded BN models (`normprop_tf.export.fold`). Peak resident memory is
measured per variant in a fresh subprocess at batch 128, since a process's
peak only grows.

The table is printed and written into `--report` between markers. With
`--records_file`, every (width, batch, variant) cell is also written as one
JSON line (seconds per step: median, min and max over the repetitions;
images/s; peak RSS; hardware; the command), the input of experiment 5 of
reports/PROTOCOL.md (`python -m reports.make_report`).
"""

import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import keras
import tensorflow as tf

from benchmarks import harness
from normprop_tf import export
from normprop_tf.training import summaries
from normprop_tf.utils import hardware

_WIDTHS = flags.DEFINE_list('widths', ['1.0', '0.5'], 'NIN widths.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['1', '50', '128'],
                             'Batch sizes.')
_REPS = flags.DEFINE_integer('repetitions', 5, 'Training timings per cell '
                             '(median).')
_INFER_REPS = flags.DEFINE_integer(
    'inference_repetitions', 11, 'Inference timings per cell (median). More '
    'than for training: they are cheap, and folded vs plain differ by ~1%, '
    'less than the +-5% spread of single timings on this machine.')
_STEPS = flags.DEFINE_integer('steps', 0, 'Steps per timing; 0 picks about '
                              '2 s of work per timing from a first estimate.')
_REPORT = flags.DEFINE_string('report', 'reports/perf.md',
                              'Markdown file to update; empty to skip.')
_MEMORY = flags.DEFINE_bool('memory', True, 'Also measure peak RSS.')
_RECORDS = flags.DEFINE_string(
    'records_file', '', 'If set, also write one JSON line per (width, batch, '
    'variant) here, e.g. reports/runs/speed/step_time.jsonl; empty to skip.')
_ONE = flags.DEFINE_string('one_variant', None, 'Internal: measure one '
                           'variant\'s peak RSS (norm:width:batch) and exit.')

NORMS = ('normprop', 'batchnorm', 'weightnorm', 'plain')
_BEGIN, _END = '<!-- step_time:begin -->', '<!-- step_time:end -->'


def _peak_rss_mb(norm, width, batch):
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.step_time',
       f'--one_variant={norm}:{width}:{batch}'],
      capture_output=True, text=True, timeout=1200, check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])['peak_rss_mb']


def _peak_rss_of_this_process_mb():
  """VmHWM: this process's peak RSS since its exec.

  Not `getrusage().ru_maxrss`: Linux carries it over from the forked parent
  through exec, so every child of a 1.7 GB benchmark process reported the
  parent's 1.7 GB (measured: four variants, one value).
  """
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024  # kB
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one_variant(spec):
  norm, width, batch = spec.split(':')
  harness.Trainer(norm, float(width), int(batch))(3)
  print(json.dumps({'peak_rss_mb': round(_peak_rss_of_this_process_mb(), 1)}))


def _table(results, memory):
  lines = [
      '| width | batch | variant | train img/s | vs plain | '
      'inference img/s | vs plain | peak RSS (MB, batch 128) |',
      '|---|---|---|---|---|---|---|---|']
  for (width, batch), cell in results.items():
    plain_train = batch / cell['train']['plain']
    plain_infer = batch / cell['infer']['plain']
    for name in list(NORMS) + ['normprop_folded', 'batchnorm_folded']:
      train = cell['train'].get(name)
      infer = cell['infer'][name]
      train_s = f'{batch / train:,.1f}' if train else '-'
      ratio_s = f'{batch / train / plain_train:.2f}x' if train else '-'
      mem = memory.get((width, name))
      lines.append(
          f'| {width} | {batch} | {name} | {train_s} | {ratio_s} | '
          f'{batch / infer:,.1f} | {batch / infer / plain_infer:.2f}x | '
          f'{mem if mem is not None else "-"} |')
  return '\n'.join(lines)


def _targets(results):
  """The speed targets (reports/perf.md) as a Markdown table: ratio, target, met or missed.

  Ratios are of throughputs (img/s) measured in this one run.
  """
  rows = []

  def ratio(width, batch, kind, name, base):
    cell = results.get((width, batch))
    if not cell or name not in cell[kind] or base not in cell[kind]:
      return None
    return cell[kind][base] / cell[kind][name]  # seconds: base / name.

  def add(what, value, target):
    if value is None:
      return
    verdict = ('-' if target is None else
               '**met**' if value >= target else '**missed**')
    rows.append(f'| {what} | {value:.3f}x | '
                f'{"report" if target is None else f">= {target}x"} | '
                f'{verdict} |')

  widths = sorted({w for w, _ in results}, reverse=True)
  batches = sorted({b for _, b in results})
  for width in widths:
    for batch in (b for b in batches if b >= 50):
      add(f'train, NormProp / plain, width {width}, batch {batch}',
          ratio(width, batch, 'train', 'normprop', 'plain'), 0.95)
  for width in widths:
    for batch in (b for b in batches if b >= 50):
      add(f'train, NormProp / BN, width {width}, batch {batch}',
          ratio(width, batch, 'train', 'normprop', 'batchnorm'),
          1.2 if (width, batch) == (1.0, 128) else None)
  for width in widths:
    for batch in batches:
      add(f'inference, folded NormProp / plain, width {width}, batch {batch}',
          ratio(width, batch, 'infer', 'normprop_folded', 'plain'), 0.98)
  for width in widths:
    for batch in batches:
      add(f'inference, NormProp (unfolded) / plain, width {width}, batch '
          f'{batch}', ratio(width, batch, 'infer', 'normprop', 'plain'), None)
      add(f'inference, folded BN / plain, width {width}, batch {batch}',
          ratio(width, batch, 'infer', 'batchnorm_folded', 'plain'), None)
  for width in widths:
    if (width, 1) in results:
      add(f'train, NormProp / plain, width {width}, batch 1 '
          f'({1 / results[(width, 1)]["train"]["normprop"]:.1f} img/s)',
          ratio(width, 1, 'train', 'normprop', 'plain'), None)
  return '\n'.join(['| ratio of throughputs | measured | target | |',
                    '|---|---:|---|---|'] + rows)


def _write_report(path, table, results, seconds):
  command = shlex.join(['python', '-m', 'benchmarks.step_time'] + sys.argv[1:])
  body = '\n'.join([
      _BEGIN, '## Train step and inference throughput (NIN, CIFAR shapes)',
      '',
      f'Command: `{command}` ({seconds / 60:.0f} min). '
      f'Machine: {hardware.one_line(summaries.hardware_info())}; TF '
      f'{tf.__version__}, Keras {keras.__version__}, no XLA. Median of '
      f'{_REPS.value} (training) and {_INFER_REPS.value} (inference) '
      'interleaved repetitions after warm-up; synthetic '
      'in-memory batches, so the input pipeline costs nothing; a training '
      'step is one compiled forward + backward + SGD-momentum update '
      '(`benchmarks/harness.py`). "folded" '
      'rows are `normprop_tf.export.fold` models (inference only).', '',
      table, '', '### Targets', '', _targets(results), '', _END])
  harness.update_markdown_section(path, _BEGIN, _END, body)


def _write_records(path, raw, memory, seconds):
  """One JSON line per (width, batch, variant), for reports/make_report."""
  common = {
      'command': shlex.join(['python', '-m', 'benchmarks.step_time'] +
                            sys.argv[1:]),
      'hardware': summaries.hardware_info(),
      'repetitions': _REPS.value,
      'inference_repetitions': _INFER_REPS.value,
      'total_seconds': round(seconds, 1),
  }
  lines = []
  for (width, batch, kind), cells in raw.items():
    if kind != 'train':
      continue
    infer = raw[(width, batch, 'infer')]
    for name in list(NORMS) + ['normprop_folded', 'batchnorm_folded']:
      row = dict(common, width=width, batch=batch, variant=name,
                 peak_rss_mb=memory.get((width, name)),
                 peak_rss_batch=128 if (width, name) in memory else None)
      for prefix, cell in (('train', cells.get(name)),
                           ('infer', infer.get(name))):
        steps, times = cell if cell else (None, None)
        median = statistics.median(times) if times else None
        row.update({
            f'{prefix}_sec_per_step': median,
            f'{prefix}_sec_min': min(times) if times else None,
            f'{prefix}_sec_max': max(times) if times else None,
            f'{prefix}_img_per_sec': batch / median if median else None,
            f'{prefix}_steps_per_timing': steps})
      lines.append(json.dumps(row, sort_keys=True))
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  print(f'records: {path} ({len(lines)} lines)')


def main(argv):
  del argv
  if _ONE.value:
    _one_variant(_ONE.value)
    return
  start = time.time()
  results, memory, raw = {}, {}, {}
  for width in [float(w) for w in _WIDTHS.value]:
    for batch in [int(b) for b in _BATCHES.value]:
      print(f'width {width}, batch {batch}: measuring ...', flush=True)
      trainers = {n: harness.Trainer(n, width, batch) for n in NORMS}
      raw[(width, batch, 'train')] = {}
      train = harness.interleaved_medians(trainers, _REPS.value, _STEPS.value,
                       raw[(width, batch, 'train')])
      predictors = {n: harness.Predictor(t.model, batch) for n, t in trainers.items()}
      predictors['normprop_folded'] = harness.Predictor(
          export.fold(trainers['normprop'].model), batch)
      predictors['batchnorm_folded'] = harness.Predictor(
          export.fold(trainers['batchnorm'].model), batch)
      raw[(width, batch, 'infer')] = {}
      infer = harness.interleaved_medians(predictors, _INFER_REPS.value, _STEPS.value,
                       raw[(width, batch, 'infer')])
      results[(width, batch)] = {'train': train, 'infer': infer}
      print('  train img/s: ' + ', '.join(
          f'{n} {batch / s:,.1f}' for n, s in train.items()), flush=True)
    if _MEMORY.value:
      for norm in NORMS:
        memory[(width, norm)] = _peak_rss_mb(norm, width, 128)
  table = _table(results, memory)
  print(table)
  print(_targets(results))
  if _REPORT.value:
    _write_report(_REPORT.value, table, results, time.time() - start)
  if _RECORDS.value:
    _write_records(_RECORDS.value, raw, memory, time.time() - start)


if __name__ == '__main__':
  app.run(main)
