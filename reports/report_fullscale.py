"""The "Full scale" section: Table 1's CIFAR-10 cells, beside the paper's.

The records come from `benchmarks/device/table1.sh` (the Keras-only runner,
`python -m normprop_tf.train_jax`, on an accelerator) and live in
`reports/runs/fullscale/<run>/`, run names `nin_cifar10[_batchnorm][_aug]-s<seed>`.
"""

from reports import report_lib as lib
from reports import report_markdown as md

PAPER = {('C10', 'normprop'): 0.0911, ('C10', 'batchnorm'): 0.0941,
         ('C10+aug', 'normprop'): 0.0747, ('C10+aug', 'batchnorm'): 0.0725}
SCRIPT = 'bash benchmarks/device/table1.sh'
CELLS = (('C10', 'normprop', 'nin_cifar10'),
         ('C10', 'batchnorm', 'nin_cifar10_batchnorm'),
         ('C10+aug', 'normprop', 'nin_cifar10_aug'),
         ('C10+aug', 'batchnorm', 'nin_cifar10_batchnorm_aug'))
METHODS = {'normprop': 'NormProp', 'batchnorm': 'BN'}


def _by_seed(runs, stem):
  return {r.seed: r for name, r in sorted(runs.items())
          if name.startswith(f'{stem}-s') and r.status == 'completed'}


def _rows(runs):
  rows, errors = [], {}
  for column, method, stem in CELLS:
    done = _by_seed(runs, stem)
    errors[(column, method)] = {s: r.final_error('test')
                                for s, r in done.items()}
    some = next(iter(done.values()), None)
    spread = lib.spread(list(errors[(column, method)].values()))
    rows.append([column, METHODS[method], md.gin_link(f'gin/{stem}.gin'),
                 ', '.join(str(s) for s in sorted(done)) or '-',
                 md.num(lib.pct_spread(spread), some),
                 lib.pct(PAPER[(column, method)]),
                 lib.signed_pct(spread.mean - PAPER[(column, method)])
                 if spread else '-'])
  for column in ('C10', 'C10+aug'):
    diff = lib.paired_difference(errors[(column, 'normprop')],
                                 errors[(column, 'batchnorm')])
    paper = PAPER[(column, 'normprop')] - PAPER[(column, 'batchnorm')]
    rows.append([column, 'NormProp - BN', '-', f'{diff.n} paired'
                 if diff else '-', lib.signed_pct(diff.mean) if diff else '-',
                 lib.signed_pct(paper),
                 lib.signed_pct(diff.mean - paper) if diff else '-'])
  return rows


def _scale_notes(runs):
  """What differs from full scale in the records, from their config.json:
  e.g. a rehearsal's width, length or subset. [] for full-scale records."""
  notes = set()
  for name, run in sorted(runs.items()):
    width = run.setting('model', 'width')
    total = run.setting('length', 'total_steps')
    per_epoch = run.setting('length', 'steps_per_epoch')
    epochs = total / per_epoch if total and per_epoch else None
    subset = run.setting('data', 'subset_per_class')
    if width not in (None, 1.0):
      notes.add(f'width {width:g}')
    if epochs not in (None, 50):
      notes.add(f'{epochs:g} epoch{"" if epochs == 1 else "s"}')
    if subset:
      per_split = (', '.join(f'{k} {v}' for k, v in sorted(subset.items()))
                   if isinstance(subset, dict) else str(subset))
      notes.add(f'a subset of the images per class ({per_split})')
  return sorted(notes)


def section(ctx):
  runs = ctx.fullscale
  lines = ['## 9. Full scale: Table 1\'s CIFAR-10 cells', '',
           'The paper\'s network and recipe at full scale (NIN width 1.0, 50 '
           'epochs, batch 50, the gin files of `gin/`), trained with '
           '`model.fit` under Keras\' JAX backend on an accelerator '
           '(`python -m normprop_tf.train_jax`), all four cells by one '
           f'script: `{SCRIPT}`. What differs from the paper: the data is '
           'the JPEG-compressed copy of CIFAR-10 (decoded with Pillow), '
           'every setting marked reconstructed in docs/method.md is a '
           'reconstruction, and the seeds are few. Test errors in %; '
           '"difference" is this run minus the paper. The paper\'s numbers '
           'are as docs/method.md transcribes them (Table 1; unverified '
           'against the published PDF).', '']
  if not runs:
    return lines + [
        '**Not run yet.** No accelerator was available to the session that '
        f'prepared this section. On one: `{SCRIPT}` (its header lists the '
        'wheels and the data to carry), then '
        '`tar -xzf records.tar.gz -C reports/runs && python -m '
        'reports.make_report`. A rehearsal on any CPU: '
        f'`SKIP_WHEELS=1 {SCRIPT} --tiny`.']
  notes = _scale_notes(runs)
  if notes:
    lines += [f'**Not full scale:** these records were made with '
              f'{", ".join(notes)} (e.g. the script\'s `--tiny` rehearsal); '
              'they are not comparable with the paper.', '']
  lines += md.table(['column', 'method', 'gin file', 'seeds', 'test error %',
                     'paper %', 'difference (points)'], _rows(runs))
  hardware = sorted({lib.hardware_string(r.hardware) for r in runs.values()
                     if r.hardware})
  lines += ['', f'Hardware and backend: {"; ".join(hardware) or "-"}.']
  return lines + md.runs_table(runs, subdir='fullscale/',
                               work_dir='runs/fullscale')
