r"""A/B of how NormProp adds its bias: `+` (AddV2) vs `ops.add` (BiasAdd).

    python -m benchmarks.bias_add_ab [--cells=1.0:128,1.0:50,0.5:128,0.5:50]
        [--repetitions=7]

The evidence behind `normprop_tf.functional.add_bias`. With `ops.add` the
TensorFlow backend emits `BiasAdd`, and oneDNN fuses its gradient into the
filter gradient (`_MklNativeConv2DBackpropFilterWithBias`), which removes a
`Sum` over the activations (less CPU time) but serializes it (more wall time
on 2 cores). This times three training steps per cell in one process,
interleaved, median of `--repetitions`: NormProp with `+`, NormProp with
`ops.add`, and the plain network, and prints ms per step and the ratio of
each NormProp variant's throughput to plain.
"""

from absl import app
from absl import flags
from keras import ops

from benchmarks import harness
from normprop_tf import functional

_CELLS = flags.DEFINE_list('cells', ['1.0:128', '1.0:50', '0.5:128', '0.5:50'],
                           'width:batch pairs.')
_REPS = flags.DEFINE_integer('repetitions', 7, 'Timings per variant (median).')


def _traced_trainer(norm, width, batch, add_bias):
  """A Trainer whose step was traced (first call) with `add_bias`."""
  default = functional.add_bias
  try:
    functional.add_bias = add_bias
    trainer = harness.Trainer(norm, width, batch)
    trainer(2)
  finally:
    functional.add_bias = default
  return trainer


def _trainers(width, batch):
  return {
      'normprop, +': _traced_trainer('normprop', width, batch,
                                     lambda y, bias: y + bias),
      'normprop, ops.add': _traced_trainer('normprop', width, batch, ops.add),
      'plain': _traced_trainer('plain', width, batch, functional.add_bias)}


def main(argv):
  del argv
  print('| width | batch | variant | ms per step | throughput vs plain |')
  print('|---|---|---|---:|---:|')
  for cell in _CELLS.value:
    width, batch = float(cell.split(':')[0]), int(cell.split(':')[1])
    times = harness.interleaved_medians(_trainers(width, batch), _REPS.value)
    for name, seconds in times.items():
      print(f'| {width} | {batch} | {name} | {1000 * seconds:.1f} | '
            f'{times["plain"] / seconds:.3f}x |', flush=True)


if __name__ == '__main__':
  app.run(main)
