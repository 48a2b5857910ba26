r"""Throughput of the tf.data input pipeline, in images per second.

    python -m data_prep.prepare --dataset=cifar10 \
        --source=path/to/cifar10-jpg.tar.gz --data_dir=/tmp/np_data
    python benchmarks/input_pipeline.py --data_dir=/tmp/np_data

Measures the training pipeline (`make_dataset(..., 'train', 128)`: shuffle,
repeat, batch, prefetch) for decode only (parse + decode_raw + x/255),
+standardize, +ZCA and +augmentation, each without and with the in-memory
cache:
- uncached: after 20 warm-up batches;
- cached: in the steady state, after one full epoch has filled the cache
  (the first, cache-filling epoch runs at about the uncached rate);
- each cell is the median of --repeats timed windows, shown with its range,
  because the 2-core machine is often shared.
Optionally times one NIN NormProp training step at the same batch size, to
state how many times faster than the model the input pipeline runs.
Writes the table into the "## Input pipeline" section of reports/perf.md
(replacing an older version of that section, keeping the rest).
"""

import datetime
import gc
import math
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import harness
from normprop_tf import data
from normprop_tf.training import summaries
from normprop_tf.utils import hardware

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', '/tmp/np_data', 'Prepared CIFAR-10 directory.')
flags.DEFINE_integer('batch_size', 128, 'Global batch size.')
flags.DEFINE_integer('num_batches', 200, 'Timed batches per window.')
flags.DEFINE_integer('repeats', 3,
                     'Timed windows per cell; the table shows the median.')
flags.DEFINE_integer('nin_steps', 5,
                     'Timed NIN NormProp train steps (0: skip).')
flags.DEFINE_string('report', os.path.join(_ROOT, 'reports', 'perf.md'),
                    'Markdown report to update ("" to only print).')

CONFIGS = (
    ('decode only', 'none', False),
    ('+ standardize', 'standardize', False),
    ('+ ZCA', 'zca', False),
    ('+ standardize + augmentation', 'standardize', True),
    ('+ ZCA + augmentation', 'zca', True),
)
SECTION = '## Input pipeline'
_BEGIN, _END = '<!-- input_pipeline:begin -->', '<!-- input_pipeline:end -->'


def _rate(iterator, batches, batch_size):
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def measure(data_dir, preprocessing, augment, cache, batch_size, num_batches,
            repeats):
  """Returns ([images/s per window], the cache-filling epoch's images/s)."""
  ds = data.make_dataset(data_dir, 'train', batch_size,
                         preprocessing=preprocessing, augment=augment,
                         cache=cache, seed=0, verify='size')
  iterator = iter(ds)
  fill = None
  if cache:
    epoch = data.load_manifest(data_dir)['splits']['train']['num_examples']
    fill = _rate(iterator, math.ceil(epoch / batch_size) + 2, batch_size)
  else:
    _rate(iterator, 20, batch_size)
  rates = [_rate(iterator, num_batches, batch_size) for _ in range(repeats)]
  del iterator, ds
  gc.collect()
  return rates, fill


def nin_step_rate(batch_size, steps):
  """Images/s of `model.train_on_batch` for NIN NormProp (width 1.0)."""
  import keras  # pylint: disable=g-import-not-at-top
  from normprop_tf import models  # pylint: disable=g-import-not-at-top
  model = models.nin('normprop')
  model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch_size, 32, 32, 3)).astype(np.float32)
  y = rng.integers(0, 10, batch_size).astype(np.int32)
  for _ in range(2):
    model.train_on_batch(x, y)
  start = time.perf_counter()
  for _ in range(steps):
    model.train_on_batch(x, y)
  return steps * batch_size / (time.perf_counter() - start)


def machine():
  """The machine, and how busy it was when the benchmark started."""
  info = summaries.hardware_info()
  return (f'{hardware.one_line(info)}; Python {info["python"]}, TensorFlow '
          f'{info["tensorflow"]}, {info["platform"]}; 1-minute load average '
          f'{os.getloadavg()[0]:.1f} at the start (1.0 = one busy core)')


def render(rows, nin_rate, batch_size, num_batches, repeats, data_dir,
           seconds, description):
  lines = [
      SECTION, '',
      f'Measured {datetime.date.today().isoformat()} on: {description}.', '',
      'Command (after `python -m data_prep.prepare --dataset=cifar10 '
      '--source=path/to/cifar10-jpg.tar.gz --data_dir=/tmp/np_data`):',
      '',
      '```',
      f'python benchmarks/input_pipeline.py --data_dir={data_dir} '
      f'--batch_size={batch_size} --num_batches={num_batches} '
      f'--repeats={repeats}',
      '```', '',
      f'Train split of the JPEG CIFAR-10 copy (45,000 images), '
      f'`make_dataset(..., "train", {batch_size})` with shuffle, repeat, '
      f'batch and prefetch. Images/s, higher is better: the median of '
      f'{repeats} windows of {num_batches} batches, with the range. '
      '"cached" is the steady state after the first epoch filled the '
      'in-memory cache; "first epoch" is that cache-filling epoch, timed '
      'from the first batch (it includes the pipeline start-up).',
      '',
      '| pipeline | uncached | cached | first epoch (filling the cache) |',
      '|---|---:|---:|---:|',
  ]
  cell = lambda r: (f'{np.median(r):,.0f} ({min(r) / 1000:,.1f}k-'
                    f'{max(r) / 1000:,.1f}k)')
  for name, uncached, (cached, fill) in rows:
    lines.append(f'| {name} | {cell(uncached)} | {cell(cached)} | '
                 f'{fill:,.0f} |')
  target = float(np.median(dict((r[0], r[2][0]) for r in rows)[
      '+ standardize + augmentation']))
  lines += ['',
            f'Target: cached + standardized + augmented >= 5,000 images/s: '
            f'**{target:,.0f}** ({"met" if target >= 5000 else "NOT met"}).']
  if nin_rate:
    lines.append(
        f'One NIN NormProp training step (width 1.0, batch {batch_size}, '
        f'`train_on_batch`) consumes {nin_rate:,.1f} images/s here, so that '
        f'pipeline runs {target / nin_rate:,.0f}x faster than the model '
        f'(target: 20x).')
  med = {r[0]: (float(np.median(r[1])), float(np.median(r[2][0])))
         for r in rows}
  zca_uncached = med['+ ZCA'][0]
  std_cached, aug_cached = (med['+ standardize'][1],
                            med['+ standardize + augmentation'][1])
  lines += [
      '', 'Where the time goes:',
      f'- Uncached ZCA is bound by its [B, 3072] x [3072, 3072] float32 '
      f'matmul (18.9 MFLOP per image): {zca_uncached:,.0f} images/s is '
      f'{zca_uncached * 18.9e-3:,.0f} GFLOP/s. The cache sits after it, so '
      'from the second epoch on ZCA costs about as little as standardize.',
      f'- Augmentation (pad, per-image crop by gather, flip) costs '
      f'{1e6 / aug_cached - 1e6 / std_cached:,.1f} us per image on the '
      'cached standardized pipeline.',
      '- Cached, the rest is copying float32 images through shuffle, batch '
      'and prefetch (12 KB each).',
  ]
  lines += ['', f'Benchmark wall time: {seconds:.0f} s.', '']
  return '\n'.join(lines)


def main(argv):
  del argv
  start = time.perf_counter()
  description = machine()
  rows = []
  for name, preprocessing, augment in CONFIGS:
    uncached, _ = measure(FLAGS.data_dir, preprocessing, augment, False,
                          FLAGS.batch_size, FLAGS.num_batches, FLAGS.repeats)
    cached = measure(FLAGS.data_dir, preprocessing, augment, True,
                     FLAGS.batch_size, FLAGS.num_batches, FLAGS.repeats)
    print(f'{name:<30} uncached {np.median(uncached):>9,.0f} img/s   cached '
          f'{np.median(cached[0]):>9,.0f} img/s   first epoch '
          f'{cached[1]:>9,.0f} img/s', flush=True)
    rows.append((name, uncached, cached))
  nin_rate = None
  if FLAGS.nin_steps:
    nin_rate = nin_step_rate(FLAGS.batch_size, FLAGS.nin_steps)
    print(f'NIN NormProp train step: {nin_rate:,.1f} img/s', flush=True)
  section = render(rows, nin_rate, FLAGS.batch_size, FLAGS.num_batches,
                   FLAGS.repeats, FLAGS.data_dir, time.perf_counter() - start,
                   description)
  print(section)
  if FLAGS.report:
    harness.update_markdown_section(
        FLAGS.report, _BEGIN, _END, f'{_BEGIN}\n{section.rstrip()}\n{_END}')
    print(f'updated {FLAGS.report}', file=sys.stderr)


if __name__ == '__main__':
  app.run(main)
