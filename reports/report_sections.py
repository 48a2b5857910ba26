"""The sections of reports/README.md, one per experiment of PROTOCOL.md.

Each `exp*` function takes a `report_markdown.Context` and returns Markdown
lines; it draws its figures through `report_plots` into the context's
figures directory. A section whose runs are missing says "not run yet" with
the commands that produce them.
"""

from reports import report_fullscale
from reports import report_lib as lib
from reports import report_markdown as md
from reports import report_plots as plots
from reports import report_study

METHODS = {'normprop': 'NormProp', 'batchnorm': 'BN', 'weightnorm': 'weight norm',
           'plain': 'plain', 'standardize': 'global (dataset statistics)',
           'minibatch': 'minibatch statistics'}
# docs/method.md, "Table 1" (reconstructed from memory, unverified).
PAPER_TABLE1 = {'C10': {'normprop': 0.0911, 'batchnorm': 0.0941},
                'C10+aug': {'normprop': 0.0747, 'batchnorm': 0.0725}}
SPEED_COMMAND = ('python -m benchmarks.step_time --widths=1.0,0.5 '
                 '--records_file=reports/runs/speed/step_time.jsonl')


def _by_method_seed(runs, prefix, methods):
  """{method: {seed: Run}} of the present runs `<prefix><method>-s<seed>`."""
  out = {}
  for method in methods:
    for name, run in sorted(runs.items()):
      if name.startswith(f'{prefix}{method}-s'):
        out.setdefault(method, {})[run.seed] = run
  return out


def _error_curves(by_seed, split):
  """(xs epochs, mean, lo, hi) in percent of `split` error over seeds."""
  curves = [[(e, v) for _, e, v in run.series(split, 'error')]
            for run in by_seed.values() if run.status == 'completed']
  points = lib.mean_curve(curves)
  return ([x for x, _ in points], [100 * s.mean for _, s in points],
          [100 * s.lo for _, s in points], [100 * s.hi for _, s in points])


def _seed_table(by_method):
  """Final errors per method, mean and min-max over seeds, linked."""
  rows = []
  for method, by_seed in by_method.items():
    done = {s: r for s, r in by_seed.items() if r.status == 'completed'}
    any_run = next(iter(by_seed.values()))
    cells = []
    for split in ('validation', 'test'):
      cells.append(md.num(lib.pct_spread(lib.spread(
          [r.final_error(split) for r in done.values()])), any_run))
    best = lib.spread([r.summary.get('best_validation_error')
                       for r in done.values()])
    bad = sorted(s for s, r in by_seed.items() if r.status != 'completed')
    rows.append([METHODS[method], md.gin_link(any_run.gin_file),
                 ', '.join(str(s) for s in sorted(done)) or '-',
                 *cells, md.num(lib.pct_spread(best), any_run),
                 ', '.join(f's{s}: {by_seed[s].status}' for s in bad)
                 or '-'])
  return md.table(['method', 'gin file', 'seeds', 'final validation error %',
                   'final test error %', 'best validation error %',
                   'not completed'], rows)


def _decay_epochs(by_method):
  """[(epoch, label)] of the learning-rate decays of the runs' schedule."""
  run = next(iter(next(iter(by_method.values())).values()))
  length = run.config.get('length', {})
  if run.setting('lr_schedule', 'kind') != 'step' or not length:
    return []
  epochs = length['total_steps'] / length['steps_per_epoch']
  return [(fraction * epochs, 'learning-rate decay (x0.1)')
          for fraction in run.setting('lr_schedule', 'decay_at') or ()]


def _curves_section(ctx, by_method, fig_name, fig_text, paper):
  panels = []
  decays = _decay_epochs(by_method)
  for split in ('validation', 'test'):
    lines = []
    for method, by_seed in by_method.items():
      xs, ys, lo, hi = _error_curves(by_seed, split)
      if xs:
        lines.append(plots.Line(METHODS[method], xs, ys, lo, hi,
                                color=plots.COLORS[method]))
    panels.append(plots.Panel(f'{split.capitalize()} error',
                              f'{split} error (%)', lines, vlines=decays))
  # One y scale: a test split evaluated once is a point on the validation
  # curves' axes, not a zoom onto its own spread.
  plots.line_panels(ctx.figure(fig_name), panels, 'epoch', sharey=True,
                    sharex=True)
  lines = [f'![{fig_text}](figures/{fig_name})'] + md.caption(
      ctx, fig_text, paper)
  curves = {m: _error_curves(s, 'test') for m, s in by_method.items()}
  epochs = sorted({x for xs, _, _, _ in curves.values() for x in xs})
  rows = []
  for method, (xs, ys, _, _) in curves.items():
    run = next(iter(by_method[method].values()))
    values = dict(zip(xs, ys))
    rows.append([METHODS[method]] + [
        md.num(f'{values[e]:.2f}', run) if e in values else '-'
        for e in epochs])
  lines += ['Test error % per epoch, mean over seeds:', ''] + md.table(
      ['method'] + [f'epoch {e:g}' for e in epochs], rows) + ['']
  return lines


# ---- experiment 1 -----------------------------------------------------------


def exp1_convergence(ctx):
  lines = ['## 1. Convergence: NormProp vs BN vs weight norm vs plain', '',
           'Validation and test error after each epoch, identical settings '
           'but the normalization. Mean over seeds, with the min-max range '
           '(shaded in the plot, in parentheses in the table).', '']
  runs = ctx.group_runs('convergence_')
  by_method = _by_method_seed(runs, 'convergence_',
                              ('normprop', 'batchnorm', 'weightnorm', 'plain'))
  if by_method:
    lines += _curves_section(
        ctx, by_method, 'exp1_convergence.png',
        'Error vs epoch (mean over seeds, min-max shaded) of NIN width 0.25 '
        'on CIFAR-10, SGD + momentum.', "Analogue of the paper's Figure 3 "
        '(convergence with SGD + momentum)')
    lines += _seed_table(by_method)
    lines += md.runs_table(runs)
  return lines + md.missing(['convergence'], runs)


# ---- experiment 2 -----------------------------------------------------------


def _train_window(run):
  """(error, examples in the window) of the last train record, or None."""
  points = run.series('train', 'error')
  if not points:
    return None
  steps = points[-1][0] - (points[-2][0] if len(points) > 1 else 0)
  batch = run.setting('train_input', 'global_batch_size') or 0
  return points[-1][2], steps * batch


def exp2_batch1(ctx):
  lines = ['## 2. Batch size 1', '',
           'NormProp and BN trained at batch size 1 for 20,000 steps, next '
           'to batch size 50 for 400 steps: the same 20,000 examples seen '
           '(batch 1 at lr/50). The train error is the running error of the '
           'last logging window, measured in training mode (BN normalizes '
           'with the statistics of the current batch: at batch 1, those of '
           'one image\'s spatial positions); the test error uses inference '
           'mode (BN: moving averages). One seed.', '']
  runs = {n: r for n, r in ctx.runs.items()
          if n.startswith(('batch1_', 'batch50_'))}
  rows, bar_values = [], {}
  for method in ('normprop', 'batchnorm'):
    for batch in (50, 1):
      run = runs.get(f'batch{batch}_{method}')
      if run is None:
        continue
      window = _train_window(run)
      test = run.final_error('test')
      gap = (test - window[0]) if window and test is not None else None
      bar_values[(method, batch)] = (window and window[0], test)
      rows.append([METHODS[method], batch, run.last_step(),
                   f'{(run.last_step() or 0) * batch:,}',
                   md.num(lib.pct(test), run),
                   md.num(lib.pct(run.final_error('validation')), run),
                   md.num(lib.pct(window[0]), run) if window else '-',
                   f'{window[1]:,}' if window else '-',
                   md.num(lib.signed_pct(gap), run), run.status])
  if rows:
    groups = [f'{METHODS[m]}, batch {b}' for m, b in bar_values]
    pct = lambda v: None if v is None else 100 * v
    plots.bars(ctx.figure('exp2_batch1.png'), groups, [
        ('train error (last window, training mode)', '#aaaaaa',
         [pct(v[0]) for v in bar_values.values()]),
        ('test error (inference mode)', '#1f77b4',
         [pct(v[1]) for v in bar_values.values()])],
               'error (%)', 'Batch 1 vs batch 50, same examples seen')
    lines += ['![batch 1 vs batch 50](figures/exp2_batch1.png)']
    lines += md.caption(
        ctx, 'Final test error and last-window train error at batch 1 and '
        '50, after 20,000 examples.',
        "Analogue of the paper's Figure 4 (training with batch size 1)")
    lines += md.table(['method', 'batch', 'steps', 'examples seen',
                       'test error %', 'validation error %',
                       'train error % (last window)', 'window (examples)',
                       'test - train (points)', 'status'], rows)
    bn1 = bar_values.get(('batchnorm', 1))
    if bn1 and None not in bn1:
      lines += ['', f'BN at batch 1: train error {lib.pct(bn1[0])}% '
                f'(training mode) vs test error {lib.pct(bn1[1])}% '
                f'(inference mode): test - train = '
                f'{lib.signed_pct(bn1[1] - bn1[0])} points.']
    lines += md.runs_table(runs)
  return lines + md.missing(['batch1'], runs)


# ---- experiment 3 -----------------------------------------------------------

ICS_STEPS = (0, 25, 100, 250, 500, 1000)


def exp3_ics(ctx):
  lines = [
      '## 3. Internal covariate shift: true statistics vs the estimate used '
      'at inference', '',
      'Every 25 steps of the first 1,000, on a fixed batch of 250 held-out '
      'validation images, per hidden layer: the per-channel gap between the '
      'true mean/std of what the method normalizes and the estimate it uses '
      'at inference, averaged over channels '
      '(`normprop_tf/training/hidden_stats.py`). NormProp: |E z| and |Std z - 1| for '
      'z = W x / ||W|| (its parametric estimate is 0 and 1). BN: '
      '|true mean - moving mean| / moving std and |true std / moving std - '
      '1| (its moving averages). Lower is better.', '']
  runs = ctx.group_runs('ics_')
  by_method = {m: runs[f'ics_{m}'] for m in ('normprop', 'batchnorm')
               if f'ics_{m}' in runs and runs[f'ics_{m}'].records}
  if by_method:
    panels = []
    for metric, title in (('gap_mean', '|mean gap|'),
                          ('gap_std', '|std gap|')):
      panel_lines = []
      for method, run in by_method.items():
        points = lib.layer_average(run, metric)
        panel_lines.append(plots.Line(
            METHODS[method], [s for s, _ in points], [v for _, v in points],
            color=plots.COLORS[method], marker='.'))
      panels.append(plots.Panel(f'{title}, mean over hidden layers', title,
                                panel_lines))
    plots.line_panels(ctx.figure('exp3_ics_average.png'), panels,
                      'iteration', logy=True)
    lines += ['![ICS, averaged over layers](figures/exp3_ics_average.png)']
    lines += md.caption(ctx, 'Gap between the true statistics and the '
                        'inference-time estimate, averaged over the hidden '
                        'layers (log scale).',
                        "Analogue of the paper's Figure 2")
    layers = sorted({l for r in by_method.values() for l in r.probe_layers()},
                    key=lambda n: (len(n), n))
    panels = []
    for layer in layers:
      panel_lines = []
      for method, run in by_method.items():
        for metric, style, label in (('gap_mean', '-', 'mean'),
                                     ('gap_std', '--', 'std')):
          points = run.series('probe', f'ics/{layer}/{metric}')
          panel_lines.append(plots.Line(
              f'{METHODS[method]} |{label} gap|', [p[0] for p in points],
              [p[2] for p in points], color=plots.COLORS[method],
              style=style, marker=''))
      panels.append(plots.Panel(layer, 'gap', panel_lines,
                                legend=not panels))
    plots.line_panels(ctx.figure('exp3_ics_layers.png'), panels,
                      'iteration', ncols=4, panel_size=(3.2, 2.6), logy=True,
                      sharey=True)
    lines += ['![ICS per layer](figures/exp3_ics_layers.png)']
    lines += md.caption(ctx, 'The same gaps per hidden layer (solid: mean, '
                        'dashed: std; log scale, shared by all panels).',
                        "Analogue of the paper's Figure 2")
    header, rows = ['iteration'], []
    columns = []
    for method, run in by_method.items():
      for metric in ('gap_mean', 'gap_std'):
        header.append(f'{METHODS[method]} {metric}')
        columns.append((run, dict(lib.layer_average(run, metric))))
    for step in ICS_STEPS:
      if any(step in c for _, c in columns):
        rows.append([step] + [md.num(f'{c[step]:.4f}', r) if step in c else '-'
                              for r, c in columns])
    lines += ['Gaps averaged over the hidden layers:', ''] + md.table(
        header, rows)
    lines += md.runs_table(runs)
  return lines + md.missing(['ics'], runs)


# ---- experiment 4 -----------------------------------------------------------


def exp4_input(ctx):
  lines = ['## 4. Global vs minibatch input normalization (NormProp)', '',
           'Two NormProp runs per seed, identical but for the input '
           'normalization: per-dimension standardization with statistics of '
           'the training set (global) or of each minibatch.', '']
  runs = ctx.group_runs('input_')
  by_method = _by_method_seed(runs, 'input_', ('standardize', 'minibatch'))
  if by_method:
    lines += _curves_section(
        ctx, by_method, 'exp4_input.png',
        'NormProp error vs epoch with global vs minibatch input '
        'normalization (mean over seeds, min-max shaded).',
        "Analogue of the paper's Figure 1")
    lines += _seed_table(by_method)
    if len(by_method) == 2:
      diff = lib.paired_difference(
          {s: r.final_error('test') for s, r in by_method['minibatch'].items()},
          {s: r.final_error('test')
           for s, r in by_method['standardize'].items()})
      if diff:
        lines += ['', 'Final test error, minibatch - global, paired by seed: '
                  f'{_signed_spread(diff)} points.']
    lines += md.runs_table(runs)
  return lines + md.missing(['input'], runs)


def _signed_spread(s):
  if s.n == 1:
    return lib.signed_pct(s.mean)
  return (f'{lib.signed_pct(s.mean)} (per seed {lib.signed_pct(s.lo)} to '
          f'{lib.signed_pct(s.hi)}, {s.n} seeds)')


# ---- experiment 5 -----------------------------------------------------------

SPEED_VARIANTS = ('normprop', 'normprop_centered', 'batchnorm', 'weightnorm',
                  'plain', 'normprop_folded', 'batchnorm_folded')
SPEED_NAMES = {'normprop': 'NormProp', 'batchnorm': 'BN',
               'normprop_centered': 'NormProp, layers centred',
               'weightnorm': 'weight norm', 'plain': 'plain',
               'normprop_folded': 'NormProp folded',
               'batchnorm_folded': 'BN folded'}


def _speed_figure(ctx, rows):
  """Throughput relative to the plain network, per batch size."""
  plain = {(r['width'], r['batch'], k): r.get(f'{k}_sec_per_step')
           for r in rows if r['variant'] == 'plain' for k in ('train', 'infer')}
  panels = []
  for width in sorted({r['width'] for r in rows}):
    for kind, title in (('train', 'training'), ('infer', 'inference')):
      panel_lines = []
      for variant in SPEED_VARIANTS:
        points = sorted(
            (r['batch'], plain[(width, r['batch'], kind)] /
             r[f'{kind}_sec_per_step']) for r in rows
            if r['width'] == width and r['variant'] == variant and
            r.get(f'{kind}_sec_per_step') and
            plain.get((width, r['batch'], kind)))
        if points:
          panel_lines.append(plots.Line(
              SPEED_NAMES[variant], [b for b, _ in points],
              [v for _, v in points],
              color=plots.COLORS.get(variant.replace('_folded', '').replace(
                  '_centered', '')),
              style='--' if variant.endswith(('_folded', '_centered'))
              else '-'))
      panels.append(plots.Panel(f'{title}, width {width}',
                                'speed / plain (higher is faster)',
                                panel_lines))
  plots.line_panels(ctx.figure('exp5_speed.png'), panels, 'batch size',
                    logx=True, sharey=True)
  return ['![speed](figures/exp5_speed.png)'] + md.caption(
      ctx, 'Throughput relative to the plain network of the same width '
      '(plain seconds per step / variant seconds per step; 1 = as fast as '
      'plain), vs batch size, NIN on CIFAR shapes.',
      "Analogue of the paper's Figure 5 and of the abstract's speed claim")


def exp5_speed(ctx):
  lines = ['## 5. Speed: seconds per training step', '',
           'All variants in one process, interleaved, median of the '
           'repetitions after warm-up, on synthetic in-memory batches (the '
           'input pipeline costs nothing). "folded" variants are inference '
           'models with the normalization folded into the kernels '
           '(`normprop_tf.export.fold`). Timing is the one nondeterministic '
           'record of this report.', '']
  rows = sorted(ctx.speed, key=lambda r: (
      r['width'], r['batch'], SPEED_VARIANTS.index(r['variant'])
      if r['variant'] in SPEED_VARIANTS else len(SPEED_VARIANTS),
      r['variant']))
  if not rows:
    return lines + ['**Not run yet.** Run:', '', '```', SPEED_COMMAND, '```']
  first = rows[0]
  lines += [f'Command: `{first.get("command", SPEED_COMMAND)}` '
            f'([`benchmarks/step_time.py`](../benchmarks/step_time.py)); '
            f'hardware: {lib.hardware_string(first.get("hardware"))}; '
            f'code: `{(first.get("code_version") or "not recorded")[:7]}`; '
            f'{first.get("repetitions", "?")} (training) and '
            f'{first.get("inference_repetitions", first.get("repetitions", "?"))}'
            ' (inference) repetitions per cell.', '']
  lines += _speed_figure(ctx, rows)
  plain = {(r['width'], r['batch'], k): r.get(f'{k}_sec_per_step')
           for r in rows if r['variant'] == 'plain'
           for k in ('train', 'fit', 'infer')}
  bn = {(r['width'], r['batch']): r.get('train_sec_per_step')
        for r in rows if r['variant'] == 'batchnorm'}
  out = []
  for r in rows:
    key = (r['width'], r['batch'])
    train, infer = r.get('train_sec_per_step'), r.get('infer_sec_per_step')
    fit = r.get('fit_sec_per_step')
    ratio = lambda a, b: f'{a / b:.2f}x' if a and b else '-'
    out.append([r['width'], r['batch'],
                SPEED_NAMES.get(r['variant'], r['variant']),
                _seconds(train, r.get('train_sec_min'),
                         r.get('train_sec_max')),
                f'{r["batch"] / train:,.1f}' if train else '-',
                ratio(train, plain.get(key + ('train',))),
                ratio(train, bn.get(key)),
                ratio(fit, plain.get(key + ('fit',))),
                _seconds(infer, r.get('infer_sec_min'),
                         r.get('infer_sec_max')),
                f'{r["batch"] / infer:,.1f}' if infer else '-',
                ratio(infer, plain.get(key + ('infer',))),
                r.get('peak_rss_mb') if r.get('peak_rss_mb') is not None
                else '-'])
  return lines + md.table(
      ['width', 'batch', 'variant', 'train ms/step (min to max)',
       'train img/s', 'train time vs plain', 'train time vs BN',
       'model.fit time vs plain',
       'inference ms/step (min to max)', 'inference img/s',
       'inference time vs plain',
       'peak RSS MB (batch 128)'], out)


def _seconds(median, lo, hi):
  if median is None:
    return '-'
  text = f'{1000 * median:.2f}'
  return text + (f' ({1000 * lo:.2f} to {1000 * hi:.2f})' if lo is not None
                 and hi is not None else '')


# ---- experiment 6 -----------------------------------------------------------


def _learning_rate(run):
  value = run.setting('optimizer', 'learning_rate')
  if value is None:
    value = run.name.rsplit('-lr', 1)[-1]
  return float(value)


def exp6_lr_sweep(ctx):
  lines = ['## 6. Learning-rate stability', '',
           'One epoch at a constant learning rate per run, NormProp and BN '
           'with otherwise identical settings. "Stable" means only that the '
           'loss stayed finite for the epoch; "diverged": the training '
           'binary stopped on a non-finite loss (exit status 1); the loss is '
           'logged every 100 steps, which brackets the step. Final train '
           'loss: the mean over the last logging window (100 steps).', '']
  runs = ctx.group_runs('lr_sweep_')
  by_method = {}
  for name, run in runs.items():
    method = name[len('lr_sweep_'):].split('-lr')[0]
    by_method.setdefault(method, {})[_learning_rate(run)] = run
  if by_method:
    methods = [m for m in ('normprop', 'batchnorm') if m in by_method]
    rates = sorted({lr for m in methods for lr in by_method[m]})
    rows = []
    for lr in rates:
      row = [f'{lr:g}']
      for method in methods:
        run = by_method[method].get(lr)
        if run is None:
          row += ['not run yet', '-', '-']
          continue
        status = run.status
        if status == 'diverged':
          status = f'**diverged** ({lib.divergence_window(run)})'
        loss = run.last('train', 'loss') if run.status == 'completed' else None
        row += [status, md.num(f'{loss[1]:.4f}', run) if loss else '-',
                md.num(lib.pct(run.final_error('validation')), run)]
      rows.append(row)
    header = ['learning rate']
    for method in methods:
      header += [f'{METHODS[method]} status', f'{METHODS[method]} final '
                 'train loss', f'{METHODS[method]} validation error %']
    lines += md.table(header, rows) + ['']
    for method in methods:
      statuses = {lr: r.status for lr, r in by_method[method].items()}
      stable = lib.stable_range(statuses)
      diverged = [f'{lr:g}' for lr, s in sorted(statuses.items())
                  if s == 'diverged']
      text = (f'{stable[0]:g} to {stable[1]:g}' if stable else 'none')
      errors = sorted((r.final_error('validation'), lr)
                      for lr, r in by_method[method].items()
                      if r.final_error('validation') is not None)
      best = (f'; lowest validation error {lib.pct(errors[0][0])}% at '
              f'{errors[0][1]:g}' if errors else '')
      lines.append(f'- {METHODS[method]}: stable range {text} (of the rates '
                   f'run: {", ".join(f"{lr:g}" for lr in sorted(statuses))})'
                   f'; diverged at: {", ".join(diverged) or "none"}{best}.')
    panels = []
    for title, ylabel, value in (
        ('Validation error after 1 epoch', 'validation error (%)',
         lambda r: r.final_error('validation') and 100 * r.final_error(
             'validation')),
        ('Final train loss', 'train loss (last window)',
         lambda r: (r.last('train', 'loss') or (None, None))[1])):
      panel_lines, markers = [], []
      for i, method in enumerate(methods):
        done = sorted((lr, value(r)) for lr, r in by_method[method].items()
                      if r.status == 'completed' and value(r) is not None)
        panel_lines.append(plots.Line(
            METHODS[method], [x for x, _ in done], [y for _, y in done],
            color=plots.COLORS[method]))
        markers += [(lr, f'{METHODS[method]} diverged',
                     plots.COLORS[method], 0.95 - 0.07 * i)
                    for lr, r in sorted(by_method[method].items())
                    if r.status == 'diverged']
      panels.append(plots.Panel(title, ylabel, panel_lines,
                                markers_x=markers))
    plots.line_panels(ctx.figure('exp6_lr_sweep.png'), panels,
                      'learning rate', logx=True)
    lines += ['', '![learning-rate sweep](figures/exp6_lr_sweep.png)']
    lines += md.caption(ctx, 'One epoch per learning rate; x at the top: '
                        'diverged (non-finite loss).', 'No paper figure: the '
                        'full-width divergence of docs/method.md, "Learning rate and '
                        'initialization"')
    lines += md.runs_table(runs)
  return lines + md.missing(['lr_sweep'], runs)


# ---- experiment 7 -----------------------------------------------------------


def exp7_table1(ctx):
  lines = ['## 7. Table 1 analogue: NormProp - BN, with and without '
           'augmentation', '',
           'Final test error of the experiment 1 runs (C10) and of the same '
           'runs with "+aug" (pad 4, random crop, flip). The absolute errors '
           'are not comparable with the paper\'s (reduced scale); compare the '
           'difference NormProp - BN. The paper\'s numbers are the '
           'reconstruction of Table 1 in docs/method.md (from memory, unverified). Differences '
           'are paired by seed; the range is over seeds.', '']
  rows = []
  present = {}
  for column, prefix in (('C10', 'convergence_'), ('C10+aug', 'aug_')):
    runs = ctx.group_runs(prefix)
    present.update(runs)
    by_method = _by_method_seed(runs, prefix, ('normprop', 'batchnorm'))
    errors = {m: {s: r.final_error('test') for s, r in by_method.get(
        m, {}).items()} for m in ('normprop', 'batchnorm')}
    cells = []
    for method in ('normprop', 'batchnorm'):
      some = next(iter(by_method.get(method, {}).values()), None)
      cells.append(md.num(
          lib.pct_spread(lib.spread(errors[method].values())), some))
    diff = lib.paired_difference(errors['normprop'], errors['batchnorm'])
    paper = PAPER_TABLE1[column]
    paper_diff = paper['normprop'] - paper['batchnorm']
    agree = '-'
    if diff is not None:
      agree = 'yes' if (diff.mean > 0) == (paper_diff > 0) else 'no'
      if diff.lo < 0 < diff.hi:
        agree += ' (the seeds disagree in sign)'
    rows.append([column, *cells, _signed_spread(diff) if diff else '-',
                 lib.pct(paper['normprop']), lib.pct(paper['batchnorm']),
                 lib.signed_pct(paper_diff), agree])
  lines += md.table(['column', 'NormProp here %', 'BN here %',
                     'NormProp - BN here (points)', 'paper NormProp %',
                     'paper BN %', 'paper NormProp - BN (points)',
                     'same sign'], rows)
  lines += ['', 'The runs behind this table are listed in experiment 1 '
            '(C10) and below (C10+aug).']
  aug = ctx.group_runs('aug_')
  if aug:
    lines += md.runs_table(aug)
  return lines + md.missing(['convergence', 'aug'], present,
                            ['convergence_normprop', 'convergence_batchnorm', 'aug_'])


SECTIONS = (exp1_convergence, exp2_batch1, exp3_ics, exp4_input, exp5_speed,
            exp6_lr_sweep, exp7_table1, report_study.section,
            report_fullscale.section)
