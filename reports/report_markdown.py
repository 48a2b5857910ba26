"""Markdown building blocks of reports/README.md: tables, links, run lists.

Links are written for a README in `reports/`: gin files as
`../gin/reduced/<file>.gin`, run records as `runs/<name>/`. Runs the
protocol expects but that are absent are listed with the exact commands of
`reports.run_protocol`.
"""

import dataclasses
import os
import shlex

from reports import report_lib as lib
from reports import run_protocol


@dataclasses.dataclass
class Context:
  """What the sections read (records) and write (figures)."""
  runs: dict           # {name: report_lib.Run}
  speed: list          # rows of runs/speed/step_time.jsonl
  figures_dir: str
  fullscale: dict = dataclasses.field(default_factory=dict)  # runs/fullscale
  written: list = dataclasses.field(default_factory=list)

  def figure(self, name):
    self.written.append(name)
    return os.path.join(self.figures_dir, name)

  def group_runs(self, prefix):
    """{name: Run} of present runs whose name starts with `prefix`."""
    return {n: r for n, r in self.runs.items() if n.startswith(prefix)}


# ---- shared pieces ----------------------------------------------------------


def expected_command(name):
  for _, run_name, gin_file, bindings in run_protocol.experiments():
    if run_name == name:
      args = run_protocol.command(name, gin_file, bindings, 'runs/reduced',
                                  SOURCE_PLACEHOLDER)
      return shlex.join(['python'] + args[1:])
  raise KeyError(name)


def expected_names(groups):
  return [n for g, n, _, _ in run_protocol.experiments() if g in groups]


def gin_link(path):
  return f'[`{path}`](../{path})' if path else '-'


def num(text, run):
  """`text` as a link to the gin file of `run` (plain text without one)."""
  if text == '-' or not (run and run.gin_file):
    return text
  return f'[{text}](../{run.gin_file})'


def _cell(text):
  return str(text).replace('|', '\\|')


def table(header, rows):
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(_cell(c) for c in row) + ' |' for row in rows]
  return lines


SOURCE_PLACEHOLDER = 'path/to/cifar10-jpg.tar.gz'


def display_command(name, command, work_dir='runs/reduced'):
  """The recorded command as a reader reruns it.

  The offline CIFAR-10 copy's location and the work directory belong to
  the machine that made the record: they are shown as
  `path/to/cifar10-jpg.tar.gz` and `<work_dir>/<run>`.
  """
  args = []
  for arg in shlex.split(command):
    if arg.startswith('--gin_bindings=dataset.source = '):
      arg = f"--gin_bindings=dataset.source = '{SOURCE_PLACEHOLDER}'"
    elif arg.startswith('--model_dir='):
      arg = f'--model_dir={work_dir}/{name}'
    args.append(arg)
  return shlex.join(args)


def runs_table(runs, subdir='', work_dir='runs/reduced'):
  """Per run: seed, gin file, status, wall time, hardware, exact command."""
  rows = []
  for name, run in sorted(runs.items()):
    status = run.status
    if run.exit_status:
      last = run.last_step()
      status += (f' (exit {run.exit_status}, last record: '
                 f'{"none" if last is None else f"step {last}"})')
    rows.append([f'[{name}](runs/{subdir}{name}/)', _or_dash(run.seed),
                 gin_link(run.gin_file),
                 status, lib.duration(run.wall_seconds),
                 lib.duration(run.train_seconds),
                 lib.hardware_string(run.hardware),
                 f'`{run.code_version[:7]}`' if run.code_version else '-',
                 f'`{display_command(name, run.command, work_dir)}`'
                 if run.command else '-'])
  return ['', f'Runs (records in `reports/runs/{subdir}<run>/`; "code": the '
          'commit that made the record, `git describe` of its checkout):',
          ''] + table(
              ['run', 'seed', 'gin file', 'status', 'wall time', 'train time',
               'hardware', 'code', 'command'], rows)


def missing(groups, present, wanted=None):
  """'Not run yet' lines for the protocol runs of `groups` not present.

  Args:
    groups: run_protocol groups, e.g. ['convergence'].
    present: the names of the runs present.
    wanted: only runs whose name starts with one of these prefixes.
  """
  names = [n for n in expected_names(groups)
           if wanted is None or n.startswith(tuple(wanted))]
  absent = [n for n in names if n not in present]
  if not absent:
    return []
  everything = len(absent) == len(names)
  head = ('**Not run yet.**' if everything else
          f'**Not run yet: {len(absent)} of the runs.**')
  lines = ['', f'{head} Run `python -m reports.run_protocol '
           f'--only={",".join(groups)}`, or one by one:', '', '```']
  lines += [expected_command(n) for n in absent]
  return lines + ['```']


def caption(ctx, text, analogue):
  """The caption of the figure written last: '*Figure N. text analogue*'."""
  return ['', f'*Figure {len(ctx.written)}. {text} {analogue}.*', '']


def _or_dash(value):
  return '-' if value is None else value
