r"""Prepares CIFAR-10, CIFAR-100 or SVHN as TFRecords plus input statistics.

    python -m data_prep.prepare --dataset=cifar10 --data_dir=data/cifar10 \
        --source=path/to/cifar10-jpg.tar.gz

A thin command line over `normprop_tf.data.preparation.prepare` (see its
docstring for what it writes): flags in, one summary or one error line out.
"""

import sys

from absl import app
from absl import flags

from normprop_tf.data import errors
from normprop_tf.data.preparation import preparer as prepare_lib

DataError = errors.DataError

FLAGS = flags.FLAGS


def define_flags():
  """Defines the command-line flags (idempotent, for tests)."""
  if 'dataset' in FLAGS:
    return
  flags.DEFINE_string('dataset', None,
                      'Dataset to prepare: cifar10, cifar100 or svhn.')
  flags.DEFINE_string('data_dir', None,
                      'Output directory for the TFRecord shards and stats.')
  flags.DEFINE_string(
      'source', 'tfds',
      '"tfds" (download through TFDS; fails fast when offline), a folder of '
      'class subfolders (train/<class>/*.jpg, test/<class>/*.jpg), a '
      '.tar.gz of one, or the original cifar-10-python.tar.gz / '
      'cifar-100-python.tar.gz (read with a restricted unpickler).')
  flags.DEFINE_integer(
      'num_shards', 0,
      'Shards of the train split (0: about 10 MB each); other splits get '
      'shards in proportion.')
  flags.DEFINE_integer(
      'validation_size', 5000,
      'CIFAR: examples held out of train as the validation split (seeded; 0: '
      'no validation split). SVHN uses 400/class of train + 200/class of '
      'extra instead.')
  flags.DEFINE_integer('seed', 0,
                       'Seed of the validation holdout and example order.')
  flags.DEFINE_bool(
      'svhn_use_extra', True,
      'SVHN: include the 531,131 "extra" images (train += extra minus 200 '
      'validation images per class). false: train only, 400/class '
      'validation.')
  flags.DEFINE_string('tfds_data_dir', None,
                      'TFDS data directory (default: TFDS default).')
  flags.DEFINE_bool('zca', True,
                    'Also compute GCN + ZCA statistics (needed for '
                    "preprocessing='zca').")
  flags.DEFINE_float(
      'zca_epsilon', 0.1,
      'Added to the covariance eigenvalues by ZCA: pylearn2\'s 0.1 leaves '
      'CIFAR far from white; 1e-5 whitens almost exactly.')
  flags.DEFINE_enum(
      'jpeg_idct', 'accurate', ['accurate', 'tf_default'],
      'How JPEGs are decoded: accurate (libjpeg\'s exact IDCT, as Pillow '
      'decodes) or tf_default (TensorFlow\'s fast default; the reduced-scale '
      'records were prepared so).')
  flags.DEFINE_bool(
      'overwrite', False,
      'Replace a complete preparation in --data_dir that was made with '
      'other arguments.')
  flags.DEFINE_integer(
      'subset_per_class', None,
      'Keep only the first N images of every class of every split (by file '
      'name), e.g. 30 for a smoke test. Default: everything.')
  flags.mark_flags_as_required(['dataset', 'data_dir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    summary = prepare_lib.prepare(
        FLAGS.dataset, FLAGS.data_dir, source=FLAGS.source,
        num_shards=FLAGS.num_shards, validation_size=FLAGS.validation_size,
        seed=FLAGS.seed, svhn_use_extra=FLAGS.svhn_use_extra,
        tfds_data_dir=FLAGS.tfds_data_dir, compute_zca=FLAGS.zca,
        overwrite=FLAGS.overwrite,
        subset_per_class=FLAGS.subset_per_class,
        zca_epsilon=FLAGS.zca_epsilon, jpeg_idct=FLAGS.jpeg_idct)
  except DataError as e:
    print(f'data_prep.prepare: error: {e}', file=sys.stderr)
    sys.exit(1)
  state = 'already prepared, nothing rewritten' if summary['skipped'] else (
      'prepared')
  print(f'{summary["dataset"]} {state} in {summary["seconds"]:.1f} s: '
        f'{summary["data_dir"]}')
  for split, v in summary['splits'].items():
    print(f'  {split:<10} {v["num_examples"]:>7} examples  '
          f'{v["num_shards"]:>3} shards')
  print(f'  fingerprint {summary["fingerprint"][:16]}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
