"""The TensorBoard tag vocabulary: descriptions, display units, layout.

One vocabulary for every method, so that a NormProp run and a BN run
overlay on the same chart (docs/tensorboard.md):

- training and evaluation: `loss`, `error` (top-1, shown in percent),
  and, in the train run only, `learning_rate`, `sec_per_step`,
  `images_per_sec`;
- `stats/<unit>/<part>/{mean,std}`, `ics/<unit>/...`,
  `ics/mean_over_layers/...`, `weights/<unit>/...`: see
  `normprop_tf.diagnostics`.

Records (metrics.jsonl, summary.json) keep error as a fraction, as every
committed record has since the first run; only what a person reads
(TensorBoard, the console, the report) shows percent. This module imports
no TensorFlow; `custom_scalars_layout` returns plain dicts that the
TensorBoard writer turns into the plugin's proto.
"""

import fnmatch

PERCENT_TAGS = ('error',)

_PARTS = {
    'normalized': 'what the method normalizes (NormProp, weight norm: '
                  'W_i.x/||W_i||; BN: its input standardized with the moving '
                  'statistics it uses at inference)',
    'preactivation': 'the input of the nonlinearity',
    'output': "the unit's output",
}

# (pattern, description); the first match wins.
DESCRIPTIONS = (
    ('loss', 'Mean cross-entropy over the batches since the last point.'),
    ('error', 'Top-1 error, percent (records keep the fraction).'),
    ('accuracy', 'Top-1 accuracy, fraction (as Keras reports it).'),
    ('learning_rate', 'Learning rate at this step (train run only).'),
    ('sec_per_step', 'Wall seconds per training step since the last point; '
                     'the first call, which traces, is excluded.'),
    ('images_per_sec', 'Training images per second since the last point.'),
    ('ics/mean_over_layers/gap_mean',
     'mean_c |E z_c| averaged over units: how far the mean of what the '
     'method normalizes is from the 0 it assumes at inference, on the probe '
     'batch (NormProp and BN; Figure 2 of the paper).'),
    ('ics/mean_over_layers/gap_std',
     'mean_c |Std z_c - 1| averaged over units: the same for the std.'),
    ('ics/mean_over_layers/output_gap_*',
     "NormProp only: the gap of the units' outputs, which its "
     'post-normalization assumes are (0, 1), averaged over units.'),
    ('ics/*/gap_mean', 'mean_c |E z_c| of this unit on the probe batch: z is '
                       "NormProp's W_i.x/||W_i|| or BN's input standardized "
                       'with its moving statistics, both assumed mean 0.'),
    ('ics/*/gap_std', 'mean_c |Std z_c - 1| of this unit on the probe batch '
                      '(both methods assume std 1).'),
    ('ics/*/output_gap_mean', "NormProp only: mean_c |E y_c| of the unit's "
                              'output y, assumed 0.'),
    ('ics/*/output_gap_std', "NormProp only: mean_c |Std y_c - 1| of the "
                             "unit's output, assumed 1."),
    ('ics/*/channel_mean', 'Per-channel means of what the unit normalizes, '
                           'on the probe batch.'),
    ('ics/*/channel_std', 'Per-channel stds of what the unit normalizes.'),
    ('weights/*/kernel_norm', 'Per-output-unit kernel norms ||W_i||.'),
    ('weights/*/scale', "The learned per-unit scale: NormProp's gamma, "
                        "weight norm's g or BN's gamma."),
)


def describe(tag):
  """The description of `tag`, or '' when it has none."""
  for pattern, text in DESCRIPTIONS:
    if fnmatch.fnmatchcase(tag, pattern):
      return text
  if tag.startswith('stats/'):
    parts = tag.split('/')
    if len(parts) >= 3 and parts[2] in _PARTS:
      what = (f'{parts[3]} over batch and space per channel, averaged over '
              'channels' if len(parts) > 3 else 'a strided sample of values')
      return f'{_PARTS[parts[2]]}, on the probe batch: {what}.'
  return ''


def display_value(tag, value):
  """`value` in the unit TensorBoard shows (percent for error)."""
  return 100.0 * value if tag in PERCENT_TAGS else value


def custom_scalars_layout(units):
  """The covariate-shift layout: each method's gaps side by side.

  Args:
    units: the unit names, e.g. ['conv1', ..., 'conv8'].

  Returns:
    [{'title', 'charts': [{'title', 'tags': [regex]}]}]: training error
    and loss; the gaps averaged over layers; the std gap and the mean gap of
    each unit, one chart each. Custom-scalar charts overlay every run whose
    tags match, so NormProp's and BN's gaps share each chart.
  """
  averaged = {'title': 'Covariate shift: estimate gap, averaged over layers',
              'charts': [
                  {'title': '|mean gap| (0 is exact)',
                   'tags': [r'ics/mean_over_layers/gap_mean']},
                  {'title': '|std gap| (0 is exact)',
                   'tags': [r'ics/mean_over_layers/gap_std']},
                  {'title': 'NormProp output gaps',
                   'tags': [r'ics/mean_over_layers/output_gap_.*']}]}
  per_layer = [
      {'title': f'Covariate shift: {label} per layer',
       'charts': [{'title': f'{unit} {label}', 'tags': [rf'ics/{unit}/{gap}$']}
                  for unit in units]}
      for gap, label in (('gap_std', '|std gap|'), ('gap_mean', '|mean gap|'))]
  training = {'title': 'Training',
              'charts': [{'title': 'error (percent)', 'tags': [r'^error$']},
                         {'title': 'loss', 'tags': [r'^loss$']}]}
  return [training, averaged] + per_layer
