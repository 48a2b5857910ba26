r"""Where a NIN training step spends its time: TF profiler, per op type.

    python -m benchmarks.profile_step [--width=1.0] [--batch_sizes=128,1]
        [--norms=normprop,plain,batchnorm,weightnorm] [--steps=0]
        [--report=reports/perf.md]

For each variant it builds the same training step as `benchmarks.step_time`
(`benchmarks.harness.Trainer`), warms it up, traces `--steps` steps (default:
about 5 s of them) with
`tf.profiler.experimental` and reads the trace (XSpace protobuf) back: the
time of every TF op executed on the compute threads, summed per op type and
divided by the number of steps. It prints one table per batch size (ms per step, one
column per variant) and, with `--report`, writes it into that Markdown file between
markers. oneDNN op names are kept as they are (`_MklNativeFusedConv2D` is a
convolution with its BiasAdd and ReLU fused in; `...BackpropFilterWithBias`
is a filter gradient with the bias gradient fused in).

Op times are summed over the two inter-op threads, so on 2 cores a row can
exceed its share of the wall time; compare rows across variants.
"""

import collections
import glob
import os
import re
import tempfile
import time

from absl import app
from absl import flags
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from benchmarks import harness

_WIDTH = flags.DEFINE_float('width', 1.0, 'NIN width.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['128', '1'], 'Batch sizes, one '
                             'table each.')
_NORMS = flags.DEFINE_list('norms', ['normprop', 'plain', 'batchnorm',
                                     'weightnorm'], 'Variants to profile.')
_STEPS = flags.DEFINE_integer('steps', 0, 'Traced training steps; 0: about '
                              '5 s of steps per variant.')
_ROWS = flags.DEFINE_integer('rows', 14, 'Op types shown (largest first).')
_REPORT = flags.DEFINE_string('report', '', 'Markdown file to update between '
                              'markers (e.g. reports/perf.md); empty: skip.')

_OP_EVENT = re.compile(r'^[^:]+:(\w+)$')  # 'scope/op_name:OpType'
_BEGIN, _END = '<!-- profile_step:begin -->', '<!-- profile_step:end -->'


def op_times(xspace_path):
  """Summed op durations in ms per op type, from one profiler trace file.

  Args:
    xspace_path: a `*.xplane.pb` written by `tf.profiler.experimental`.

  Returns:
    A Counter {op type: milliseconds}, from the TF executor's compute
    threads (events named 'op_name:OpType').
  """
  space = xplane_pb2.XSpace()
  with open(xspace_path, 'rb') as f:
    space.ParseFromString(f.read())
  totals = collections.Counter()
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      if not line.name.startswith('tf_Compute'):
        continue
      for event in line.events:
        match = _OP_EVENT.match(names.get(event.metadata_id, ''))
        if match:  # Skips executor events such as 'ExecutorState::Process'.
          totals[match.group(1)] += event.duration_ps / 1e9
  return totals


def profile(norm, width, batch, steps):
  """Returns ({op type: ms per step}, wall seconds per traced step)."""
  trainer = harness.Trainer(norm, width, batch)
  trainer(2)  # Tracing and warm-up, outside the trace.
  per_step = trainer(3)
  steps = steps or max(5, min(200, int(5.0 / per_step)))
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    trainer(steps)
    seconds = (time.perf_counter() - start) / steps
    tf.profiler.experimental.stop()
    paths = glob.glob(os.path.join(logdir, '**', '*.xplane.pb'),
                      recursive=True)
    if not paths:
      raise RuntimeError(f'The profiler wrote no trace under {logdir}.')
    totals = op_times(paths[0])
  return {op: ms / steps for op, ms in totals.items()}, seconds


def table(results, rows):
  """Markdown table: op types (largest first) x variants, ms per step."""
  norms = list(results)
  ops = collections.Counter()
  for times, _ in results.values():
    for op, ms in times.items():
      ops[op] = max(ops[op], ms)
  lines = ['| op type (ms per step) | ' + ' | '.join(norms) + ' |',
           '|---|' + '---:|' * len(norms)]
  shown = [op for op, _ in ops.most_common(rows)]
  for op in shown:
    lines.append(f'| `{op}` | ' + ' | '.join(
        f'{results[n][0].get(op, 0.0):.1f}' for n in norms) + ' |')
  lines.append('| all other op types | ' + ' | '.join(
      f'{sum(ms for op, ms in results[n][0].items() if op not in shown):.1f}'
      for n in norms) + ' |')
  lines.append('| **sum of op times** | ' + ' | '.join(
      f'**{sum(results[n][0].values()):.1f}**' for n in norms) + ' |')
  lines.append('| wall time per step (traced) | ' + ' | '.join(
      f'{1000 * results[n][1]:.1f}' for n in norms) + ' |')
  return '\n'.join(lines)


def _write_report(path, sections):
  body = [_BEGIN, '## Where the training step time goes (TF profiler)', '',
          f'Command: `python -m benchmarks.profile_step --width={_WIDTH.value} '
          f'--batch_sizes={",".join(_BATCHES.value)} --report={path}`. Op '
          'times from the TF profiler trace of the training steps '
          '(`benchmarks/harness.py`) of each variant, summed over both '
          'compute threads: a row is CPU time, not wall time, so rows can add '
          'up to more than the wall time per step.', '']
  for batch, text in sections:
    body += [f'### Width {_WIDTH.value}, batch {batch}', '', text, '']
  body.append(_END)
  harness.update_markdown_section(path, _BEGIN, _END, '\n'.join(body))


def main(argv):
  del argv
  sections = []
  for batch in [int(b) for b in _BATCHES.value]:
    results = {}
    for norm in _NORMS.value:
      print(f'profiling {norm} (width {_WIDTH.value}, batch {batch}) ...',
            flush=True)
      results[norm] = profile(norm, _WIDTH.value, batch, _STEPS.value)
    text = table(results, _ROWS.value)
    print(text)
    sections.append((batch, text))
  if _REPORT.value:
    _write_report(_REPORT.value, sections)


if __name__ == '__main__':
  app.run(main)
