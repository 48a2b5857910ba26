r"""Train-step and inference throughput of NIN: NormProp vs BN vs WN vs plain.

    python -m benchmarks.step_time [--widths=1.0,0.5] [--batch_sizes=1,50,128]
        [--repetitions=5] [--inference_repetitions=11]
        [--report=reports/perf.md]
        [--records_file=reports/runs/speed/step_time.jsonl]

All variants run in one process, interleaved (variant order rotates every
repetition), after warm-up; each cell is the median of `--repetitions`
(inference: `--inference_repetitions`) timings of `--steps` steps. Training
is timed two ways: `benchmarks.harness.Trainer` (a compiled forward/
backward/SGD-momentum step called from Python, as the training loop does;
no XLA) and `benchmarks.harness.FitTrainer` (the same step inside
`model.fit`, timed from inside by a callback), both on one in-memory batch,
so the input pipeline costs nothing. Inference uses compiled calls, also for
the folded NormProp and folded BN models (`normprop_tf.export.fold`). Peak
resident memory is measured per variant in a fresh subprocess at batch 128,
since a process's peak only grows.

Variants: the four methods of `models.NORMS` as `nin` builds them, and
'normprop_centered', NormProp with every layer centring its own output
(`nin(absorb_shifts=False)`: the code before the shift was moved into the
next layer), so that change is measured in the same run.

The table and the target check are printed and written into `--report`
between markers. With `--records_file`, every (width, batch, variant) cell is
also written as one JSON line (seconds per step: median, min and max over the
repetitions; images/s; peak RSS; hardware; code version; the command), the
input of experiment 5 of reports/PROTOCOL.md (`python -m reports.make_report`).
"""

import json
import logging
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
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['1', '50', '128'],
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
_MEMORY_REPS = flags.DEFINE_integer(
    'memory_repetitions', 3, 'Fresh processes per variant for peak RSS '
    '(median).')
_RECORDS = flags.DEFINE_string(
    'records_file', '', 'If set, also write one JSON line per (width, batch, '
    'variant) here, e.g. reports/runs/speed/step_time.jsonl; empty to skip.')
_ONE = flags.DEFINE_string('one_variant', None, 'Internal: measure one '
                           'variant\'s peak RSS (norm:width:batch) and exit.')

# variant: (norm, nin keyword arguments).
VARIANTS = {
    'normprop': ('normprop', {}),
    'normprop_centered': ('normprop', {'absorb_shifts': False}),
    'batchnorm': ('batchnorm', {}),
    'weightnorm': ('weightnorm', {}),
    'plain': ('plain', {}),
}
FOLDED = ('normprop_folded', 'batchnorm_folded')
_BEGIN, _END = '<!-- step_time:begin -->', '<!-- step_time:end -->'


def _peak_rss_mb(norm, width, batch):
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.step_time',
       f'--one_variant={norm}:{width}:{batch}'],
      capture_output=True, text=True, timeout=1200, check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])['peak_rss_mb']


def _peak_rss_medians(width, names, repetitions):
  """{name: median peak RSS in MB} of fresh processes, interleaved: a single
  process's peak varies by a few percent from run to run (allocator)."""
  peaks = {name: [] for name in names}
  for rep in range(repetitions):
    for name in names[rep % len(names):] + names[:rep % len(names)]:
      peaks[name].append(_peak_rss_mb(name, width, 128))
  return {name: statistics.median(p) for name, p in peaks.items()}


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
  name, width, batch = spec.split(':')
  norm, kwargs = VARIANTS[name]
  harness.Trainer(norm, float(width), int(batch), **kwargs)(3)
  print(json.dumps({'peak_rss_mb': round(_peak_rss_of_this_process_mb(), 1)}))


def _table(results, memory):
  lines = [
      '| width | batch | variant | train img/s (loop) | vs plain | '
      'train img/s (model.fit) | vs plain | inference img/s | vs plain | '
      'peak RSS (MB, batch 128) | vs plain |',
      '|---|---|---|---|---|---|---|---|---|---|---|']
  for (width, batch), cell in results.items():
    plain = {kind: batch / cell[kind]['plain'] for kind in cell}
    for name in list(VARIANTS) + list(FOLDED):
      cols = []
      for kind in ('train', 'fit', 'infer'):
        seconds = cell[kind].get(name)
        cols += ([f'{batch / seconds:,.1f}',
                  f'{batch / seconds / plain[kind]:.3f}x'] if seconds else
                 ['-', '-'])
      mem, base = memory.get((width, name)), memory.get((width, 'plain'))
      cols += [f'{mem:,.0f}' if mem else '-',
               f'{mem / base:.3f}x' if mem and base else '-']
      lines.append(f'| {width} | {batch} | {name} | ' + ' | '.join(cols) +
                   ' |')
  return '\n'.join(lines)


def _ratio(results, width, batch, kind, name, base):
  """Throughput of `name` over `base` in one cell, or None."""
  cell = results.get((width, batch), {}).get(kind, {})
  if name not in cell or base not in cell:
    return None
  return cell[base] / cell[name]  # Seconds: base / name.


def _targets(results, memory):
  """The speed targets (reports/perf.md) as a Markdown table: ratio,
  target, met or missed. Ratios are of throughputs (of peak RSS for
  memory) measured in this one run."""
  rows = []

  def add(what, value, target, higher_is_better=True):
    if value is None:
      return
    if target is None:
      verdict = '-'
    else:
      met = value >= target if higher_is_better else value <= target
      verdict = '**met**' if met else '**missed**'
    bound = ('report' if target is None else
             f'{">=" if higher_is_better else "<="} {target:.3g}x')
    rows.append(f'| {what} | {value:.3f}x | {bound} | {verdict} |')

  widths = sorted({w for w, _ in results}, reverse=True)
  batches = sorted({b for _, b in results})
  big = [b for b in batches if b >= 50]
  for kind, how in (('train', 'custom loop'), ('fit', 'model.fit')):
    for width in widths:
      for batch in big:
        add(f'train ({how}), NormProp / plain, width {width}, batch {batch}',
            _ratio(results, width, batch, kind, 'normprop', 'plain'), 0.98)
  for width in widths:
    if 1 in batches:
      add(f'train (custom loop), NormProp / plain, width {width}, batch 1',
          _ratio(results, width, 1, 'train', 'normprop', 'plain'), 0.95)
      add(f'train (model.fit), NormProp / plain, width {width}, batch 1',
          _ratio(results, width, 1, 'fit', 'normprop', 'plain'), None)
  for width in widths:
    mem, base = memory.get((width, 'normprop')), memory.get((width, 'plain'))
    if mem and base:
      add(f'peak RSS, NormProp / plain, width {width}, batch 128',
          mem / base, 1.03, higher_is_better=False)
  for width in widths:
    for batch in batches:
      add(f'inference, NormProp (unfolded) / plain, width {width}, batch '
          f'{batch}', _ratio(results, width, batch, 'infer', 'normprop',
                             'plain'), 0.97)
  for width in widths:
    for batch in batches:
      add(f'inference, folded NormProp / plain, width {width}, batch {batch}',
          _ratio(results, width, batch, 'infer', 'normprop_folded', 'plain'),
          0.98)
  # "Not below today's": the same run's centred NormProp (the earlier code)
  # sets the bar for NormProp / BN.
  for kind, how in (('train', 'custom loop'), ('fit', 'model.fit')):
    for width in widths:
      for batch in batches:
        now = _ratio(results, width, batch, kind, 'normprop', 'batchnorm')
        before = _ratio(results, width, batch, kind, 'normprop_centered',
                        'batchnorm')
        if now and before:
          add(f'train ({how}), NormProp / BN, width {width}, batch {batch} '
              f'(centred layers: {before:.3f}x)', now, before)
  return '\n'.join(['| ratio | measured | target | |',
                    '|---|---:|---|---|'] + rows)


def _write_report(path, table, targets, seconds):
  command = shlex.join(['python', '-m', 'benchmarks.step_time'] + sys.argv[1:])
  body = '\n'.join([
      _BEGIN, '## Train step and inference throughput (NIN, CIFAR shapes)',
      '',
      f'Command: `{command}` ({seconds / 60:.0f} min), code '
      f'{hardware.code_version()}. Machine: '
      f'{hardware.one_line(summaries.hardware_info())}; TF '
      f'{tf.__version__}, Keras {keras.__version__}, no XLA. Median of '
      f'{_REPS.value} (training) and {_INFER_REPS.value} (inference) '
      'interleaved repetitions after warm-up; synthetic '
      'in-memory batches, so the input pipeline costs nothing; a training '
      'step is one compiled forward + backward + SGD-momentum update, '
      'called from Python ("loop") or inside `model.fit`, timed from the end '
      'of its first step to the end of its last ("model.fit"; '
      '`benchmarks/harness.py`). "folded" rows are `normprop_tf.export.fold` '
      'models (inference only); "normprop_centered" is NormProp with every '
      'layer centring its own output (`nin(absorb_shifts=False)`).', '',
      table, '', '### Targets', '', targets, '', _END])
  harness.update_markdown_section(path, _BEGIN, _END, body)


def _write_records(path, raw, memory, seconds):
  """One JSON line per (width, batch, variant), for reports/make_report."""
  common = {
      'command': shlex.join(['python', '-m', 'benchmarks.step_time'] +
                            sys.argv[1:]),
      'hardware': summaries.hardware_info(),
      'code_version': hardware.code_version(),
      'repetitions': _REPS.value,
      'inference_repetitions': _INFER_REPS.value,
      'total_seconds': round(seconds, 1),
  }
  lines = []
  for (width, batch), kinds in raw.items():
    for name in list(VARIANTS) + list(FOLDED):
      row = dict(common, width=width, batch=batch, variant=name,
                 peak_rss_mb=memory.get((width, name)),
                 peak_rss_batch=128 if (width, name) in memory else None)
      for prefix in ('train', 'fit', 'infer'):
        steps, times = kinds[prefix].get(name, (None, None))
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


def _measure_cell(width, batch, raw):
  """{kind: {variant: seconds per step}} for one (width, batch)."""
  trainers, fitters = {}, {}
  for name, (norm, kwargs) in VARIANTS.items():
    trainers[name] = harness.Trainer(norm, width, batch, **kwargs)
    fitters[name] = harness.FitTrainer(norm, width, batch, **kwargs)
  # Loop and fit steps in one rotation, so drifts hit both alike.
  both = {**{('train', n): t for n, t in trainers.items()},
          **{('fit', n): t for n, t in fitters.items()}}
  timed = {}
  medians = harness.interleaved_medians(both, _REPS.value, _STEPS.value,
                                        timed)
  cell = {'train': {}, 'fit': {}}
  raw.update({'train': {}, 'fit': {}})
  for (kind, name), seconds in medians.items():
    cell[kind][name] = seconds
    raw[kind][name] = timed[(kind, name)]
  predictors = {n: harness.Predictor(t.model, batch)
                for n, t in trainers.items()}
  for name in FOLDED:
    predictors[name] = harness.Predictor(
        export.fold(trainers[name[:-len('_folded')]].model), batch)
  raw['infer'] = {}
  cell['infer'] = harness.interleaved_medians(
      predictors, _INFER_REPS.value, _STEPS.value, raw['infer'])
  return cell


def main(argv):
  del argv
  # Every variant traces its own steps, which TF warns about as retracing.
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
  if _ONE.value:
    _one_variant(_ONE.value)
    return
  start = time.time()
  results, memory, raw = {}, {}, {}
  cells = [(float(w), int(b)) for w in _WIDTHS.value
           for b in _BATCH_SIZES.value]
  for i, (width, batch) in enumerate(cells):
    elapsed = time.time() - start
    eta = f', ETA {elapsed / i * (len(cells) - i) / 60:.0f} min' if i else ''
    print(f'[{i + 1}/{len(cells)}] width {width}, batch {batch}: measuring '
          f'({elapsed / 60:.0f} min so far{eta}) ...', flush=True)
    raw[(width, batch)] = {}
    results[(width, batch)] = _measure_cell(width, batch, raw[(width, batch)])
    print('  train img/s (loop): ' + ', '.join(
        f'{n} {batch / s:,.1f}'
        for n, s in results[(width, batch)]['train'].items()), flush=True)
  if _MEMORY.value:
    for width in sorted({w for w, _ in cells}, reverse=True):
      print(f'peak RSS at width {width}, batch 128 ...', flush=True)
      medians = _peak_rss_medians(width, list(VARIANTS),
                                  _MEMORY_REPS.value)
      memory.update({(width, n): m for n, m in medians.items()})
  table, targets = _table(results, memory), _targets(results, memory)
  print(table)
  print(targets)
  if _REPORT.value:
    _write_report(_REPORT.value, table, targets, time.time() - start)
  if _RECORDS.value:
    _write_records(_RECORDS.value, raw, memory, time.time() - start)


if __name__ == '__main__':
  app.run(main)
