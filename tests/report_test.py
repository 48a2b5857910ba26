"""reports/make_report: the committed report regenerates byte for byte, and
its statistics are right on a tiny synthetic runs directory."""

import json
import pathlib

import matplotlib
import pytest

from reports import make_report
from reports import report_lib as lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
REPORTS = ROOT / 'reports'


def _generate(runs_dir, out_dir, conclusions=None):
  make_report.generate(str(runs_dir), str(out_dir),
                       str(conclusions) if conclusions else None)
  return {p.relative_to(out_dir).as_posix(): p.read_bytes()
          for p in sorted(out_dir.rglob('*')) if p.is_file()}


def test_committed_report_regenerates_byte_for_byte(tmp_path):
  readme = REPORTS / 'README.md'
  assert readme.is_file(), (
      'reports/README.md is missing: run `python -m reports.make_report` '
      'and commit it with reports/figures/.')
  generated = _generate(REPORTS / 'runs', tmp_path,
                        REPORTS / 'conclusions.md')
  committed = {'README.md': readme.read_bytes()}
  committed.update({f'figures/{p.name}': p.read_bytes()
                    for p in sorted((REPORTS / 'figures').glob('*.png'))})
  assert sorted(generated) == sorted(committed), (
      'the generated files differ from the committed ones; rerun '
      '`python -m reports.make_report`')
  for name, data in generated.items():
    assert data == committed[name], (
        f'{name} differs from the committed reports/{name}: rerun '
        '`python -m reports.make_report` and commit the result (PNG bytes '
        'also depend on the matplotlib version named in README.md; here '
        f'{matplotlib.__version__}).')


# ---- statistics helpers -----------------------------------------------------


def test_spread_and_paired_difference():
  s = lib.spread([0.30, None, 0.34])
  assert (s.n, s.lo, s.hi) == (2, 0.30, 0.34)
  assert s.mean == pytest.approx(0.32)
  assert s.std == pytest.approx(0.0282842712)
  assert lib.spread([None]) is None
  assert lib.spread([0.5]).std == 0.0
  d = lib.paired_difference({1: 0.30, 2: 0.34, 3: 0.5}, {1: 0.33, 2: 0.35})
  assert d.n == 2
  assert d.mean == pytest.approx(-0.02)
  assert (d.lo, d.hi) == pytest.approx((-0.03, -0.01))
  assert lib.pct_spread(s) == '32.00 (30.00 to 34.00)'
  assert lib.signed_pct(-0.02) == '-2.00'


def test_stable_range():
  assert lib.stable_range({0.005: 'completed', 0.01: 'completed',
                           0.05: 'diverged', 0.1: 'completed',
                           0.2: 'diverged'}) == (0.005, 0.01)
  assert lib.stable_range({0.1: 'completed', 0.01: 'diverged',
                           0.2: 'completed'}) == (0.1, 0.2)
  assert lib.stable_range({0.1: 'diverged'}) is None
  assert lib.stable_range({}) is None


def test_mean_curve_uses_common_points():
  curve = lib.mean_curve([[(1, 0.5), (2, 0.4)], [(1, 0.3)]])
  assert [x for x, _ in curve] == [1]
  assert curve[0][1].mean == pytest.approx(0.4)


# ---- a synthetic runs directory ---------------------------------------------


def _write_run(runs_dir, name, gin, seed=0, errors=(), lr=0.01, batch=50,
               diverged=False, probe=None, steps_per_epoch=900):
  run_dir = runs_dir / name
  run_dir.mkdir(parents=True)
  rows = []

  def rec(step, split, metric, value):
    rows.append({'step': step, 'epoch': step / steps_per_epoch,
                 'split': split, 'metric': metric, 'value': value,
                 'seed': seed, 'config': gin})

  for epoch, (train, val, test) in enumerate(errors, start=1):
    step = epoch * steps_per_epoch
    rec(step - 100, 'train', 'loss', 2.0)
    rec(step - 100, 'train', 'error', 0.9)
    rec(step, 'train', 'loss', 1.0 + train)
    rec(step, 'train', 'error', train)
    rec(step, 'validation', 'error', val)
    rec(step, 'test', 'error', test)
  # BN runs under the records' older names (hidden/...), the others under
  # today's (ics/...): the report reads both the same.
  prefix = 'hidden' if 'batchnorm' in gin else 'ics'
  for step, (gap_mean, gap_std) in sorted((probe or {}).items()):
    for layer in ('conv1', 'conv2', 'conv10'):
      rec(step, 'probe', f'{prefix}/{layer}/gap_mean', gap_mean)
      rec(step, 'probe', f'{prefix}/{layer}/gap_std', gap_std)
    if prefix == 'ics':
      rec(step, 'probe', 'ics/mean_over_layers/gap_mean', gap_mean)
  (run_dir / 'metrics.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in rows))
  gin_file = f'gin/reduced/{gin}.gin'
  (run_dir / 'flags.json').write_text(json.dumps({
      'command': f'python -m normprop_tf.train --gin_file={gin_file} '
                 f'--model_dir=runs/reduced/{name}',
      'gin_file': [gin_file]}))
  (run_dir / 'config.json').write_text(json.dumps({
      'optimizer': {'learning_rate': lr},
      'train_input': {'global_batch_size': batch},
      'model': {'width': 0.25}, 'data': {'source': '/data/x.tar.gz'}}))
  if diverged:
    (run_dir / 'exit_status').write_text('1\n')
    return
  final = {'validation': {'error': errors[-1][1]},
           'test': {'error': errors[-1][2]}} if errors else {}
  (run_dir / 'summary.json').write_text(json.dumps({
      'seed': seed, 'final': final, 'wall_time_seconds': 65.4,
      'train_seconds': 50.0, 'best_validation_error': 0.1,
      'dataset_fingerprint': 'abc',
      'hardware': {'cpu': 'Test CPU', 'cpu_count': 2,
                   'tensorflow': '2.21.0', 'logical_devices': {'CPU': 1}}}))


def _synthetic_runs(runs_dir):
  _write_run(runs_dir, 'lr_sweep_normprop-lr0.01', 'lr_sweep_normprop',
             lr=0.01, errors=[(0.5, 0.45, 0.46)])
  _write_run(runs_dir, 'lr_sweep_normprop-lr0.1', 'lr_sweep_normprop',
             lr=0.1, errors=[(0.5, 0.45, 0.46)][:0], diverged=True)
  _write_run(runs_dir, 'lr_sweep_batchnorm-lr0.01', 'lr_sweep_batchnorm',
             lr=0.01, errors=[(0.5, 0.40, 0.41)])
  _write_run(runs_dir, 'lr_sweep_batchnorm-lr0.1', 'lr_sweep_batchnorm',
             lr=0.1, errors=[(0.5, 0.42, 0.43)])
  for seed, (np_err, bn_err) in {1: (0.30, 0.33), 2: (0.34, 0.35)}.items():
    _write_run(runs_dir, f'convergence_normprop-s{seed}',
               'convergence_normprop', seed=seed,
               errors=[(0.5, 0.5, 0.5), (0.3, np_err, np_err)])
    _write_run(runs_dir, f'convergence_batchnorm-s{seed}',
               'convergence_batchnorm', seed=seed,
               errors=[(0.5, 0.5, 0.5), (0.3, bn_err, bn_err)])
    # The study's baselines: experiment 1's configs rerun under their names.
    _write_run(runs_dir, f'study_baseline_normprop-s{seed}',
               'convergence_normprop', seed=seed,
               errors=[(0.5, 0.5, 0.5), (0.3, np_err, np_err)])
  for prep, err in (('standardize', 0.40), ('minibatch', 0.41)):
    _write_run(runs_dir, f'input_{prep}-s1', f'input_{prep}', seed=1,
               errors=[(0.3, err, err)])
  for method, err in (('normprop', 0.28), ('batchnorm', 0.27)):
    _write_run(runs_dir, f'aug_{method}-s1', f'aug_{method}', seed=1,
               errors=[(0.3, err, err)])
  _write_run(runs_dir, 'batch1_batchnorm', 'batch1_batchnorm', batch=1,
             errors=[(0.20, 0.70, 0.75)], steps_per_epoch=20000)
  _write_run(runs_dir, 'ics_normprop', 'ics_normprop',
             probe={0: (0.1, 0.2), 25: (0.05, 0.1)})
  _write_run(runs_dir, 'ics_batchnorm', 'ics_batchnorm',
             probe={0: (1.0, 2.0), 25: (0.5, 0.8)})
  # The study: a one-factor variant with 2 seeds, validation 0.28 and 0.30
  # against the NormProp baseline's 0.30 and 0.34; final gaps 0.2 / 0.4.
  for seed, err in ((1, 0.28), (2, 0.30)):
    _write_run(runs_dir, f'study_gamma1_normprop-s{seed}',
               'study_gamma1_normprop', seed=seed,
               errors=[(0.5, 0.5, 0.5), (0.3, err, err + 0.01)],
               probe={0: (1.0, 1.0), 1800: (0.2, 0.4)})
  # A study variant whose two seeds both diverged.
  for seed in (1, 2):
    _write_run(runs_dir, f'study_classifier_gamma8_normprop-s{seed}',
               'study_classifier_gamma8_normprop', seed=seed, diverged=True)
  # A study variant with one completed seed and one diverged.
  _write_run(runs_dir, 'study_pool_correction_normprop-s1',
             'study_pool_correction_normprop', seed=1,
             errors=[(0.5, 0.5, 0.5), (0.3, 0.36, 0.37)])
  _write_run(runs_dir, 'study_pool_correction_normprop-s2',
             'study_pool_correction_normprop', seed=2, diverged=True)
  # Full scale: two Table 1 cells from the accelerator script.
  for stem, err in (('nin_cifar10', 0.10), ('nin_cifar10_batchnorm', 0.09)):
    _write_run(runs_dir / 'fullscale', f'{stem}-s1', stem, seed=1,
               errors=[(0.1, err, err)])
  speed = runs_dir / 'speed'
  speed.mkdir()
  (speed / 'step_time.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in [
      {'width': 0.25, 'batch': b, 'variant': v, 'train_sec_per_step': t * b,
       'infer_sec_per_step': t * b / 3, 'peak_rss_mb': None,
       'repetitions': 5, 'command': 'python -m benchmarks.step_time',
       'hardware': {'cpu': 'Test CPU', 'cpu_count': 2}}
      for b in (1, 50) for v, t in (('normprop', 0.01), ('batchnorm', 0.02),
                                    ('plain', 0.008))]))


def test_synthetic_report_numbers_and_determinism(tmp_path):
  runs_dir = tmp_path / 'runs'
  _synthetic_runs(runs_dir)
  first = _generate(runs_dir, tmp_path / 'a')
  second = _generate(runs_dir, tmp_path / 'b')
  assert first == second
  text = first['README.md'].decode()
  # Experiment 6: the diverged rate and the stable ranges.
  assert '- NormProp: stable range 0.01 to 0.01' in text
  assert ('diverged at: 0.1; lowest validation error 45.00% at 0.01.'
          in text)
  assert '- BN: stable range 0.01 to 0.1' in text
  assert 'lowest validation error 40.00% at 0.01.' in text
  assert '**diverged** (after step 0)' in text
  # Experiment 7: NormProp - BN paired by seed: -3 and -1 points.
  assert '| C10 | [32.00 (30.00 to 34.00)](../gin/reduced/' in text
  assert '-2.00 (per seed -3.00 to -1.00, 2 seeds)' in text
  assert '| -0.30 | yes |' in text
  assert '| +1.00 | 7.47 | 7.25 | +0.22 | yes |' in text
  # Experiment 4: minibatch - global input normalization.
  assert 'minibatch - global, paired by seed: +1.00 points.' in text
  # Experiment 2: BN at batch 1, train error 20% vs test error 75%.
  assert 'test - train = +55.00 points' in text
  # Missing runs are "not run yet" with their commands.
  assert ('python -m normprop_tf.train --gin_file=gin/reduced/'
          'convergence_weightnorm.gin') in text
  assert 'Not run yet' in text
  assert 'Not written yet' in text
  # Full scale: each cell beside the paper's, and NormProp - BN.
  assert '| C10 | NormProp | [`gin/nin_cifar10.gin`]' in text
  assert '10.00](../gin/reduced/nin_cifar10.gin) | 9.11 | +0.89 |' in text
  assert '| C10 | NormProp - BN | - | 1 paired | +1.00 | -0.30 | +1.30 |' in text
  # The study: -3 points (paired: -2 and -4) against the baseline; the
  # gaps of the last probe; the best variant's gap figure.
  assert ('| 5. gamma init | NormProp, gamma init 1 (not 1/1.21) |' in text)
  assert '| -3.00 | -3.00 | 0.20 / 0.40 | - | 0.20 / 0.40 |' in text
  assert '4-epoch variant with the lowest validation error, NormProp, gamma init' \
      in text
  assert ("| NormProp, classifier gamma 8 | [`gin/reduced/"
          "study_classifier_gamma8_normprop.gin`]") in text
  assert '| 1, 2 | **diverged** (seed 1: after step 0; seed 2: after step 0)' \
      in text
  # A half-diverged variant: the completed seed's numbers (+6 points against
  # the baseline's seed 1), and the diverged seed named beside them.
  assert ('| 1 (seed 2 **diverged**, after step 0) | [36.00](../gin/reduced/'
          'study_pool_correction_normprop.gin) |') in text
  assert '| +6.00 | +6.00 |' in text
  assert sorted(first) == ['README.md', 'figures/exp1_convergence.png',
                           'figures/exp2_batch1.png',
                           'figures/exp3_ics_average.png',
                           'figures/exp3_ics_layers.png',
                           'figures/exp4_input.png',
                           'figures/exp5_speed.png',
                           'figures/exp6_lr_sweep.png',
                           'figures/study_gaps.png']


def test_empty_runs_dir_reports_everything_not_run(tmp_path):
  conclusions = tmp_path / 'conclusions.md'
  conclusions.write_text('NormProp: reproduced.\n')
  files = _generate(tmp_path / 'none', tmp_path / 'out', conclusions)
  text = files['README.md'].decode()
  assert text.count('**Not run yet.**') == 9
  assert text.endswith('## 10. Conclusions\n\nNormProp: reproduced.\n')
  assert sorted(files) == ['README.md']
