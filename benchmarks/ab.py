r"""A/B timings behind the choices in `normprop_tf.functional` and `nin`.

    python -m benchmarks.ab --experiment=bias_add|kernel_gradient|absorb_shifts
        [--cells=1.0:128,1.0:50,0.5:128,0.5:50] [--repetitions=7]

Each experiment builds NormProp training steps that differ in one choice,
plus the plain network, and times them in one process, interleaved, median
of `--repetitions` (`benchmarks.harness`); it prints ms per step and each
variant's throughput relative to plain. The experiments:

- bias_add: how NormProp adds its bias, `+` (AddV2) or `ops.add` (BiasAdd,
  whose gradient oneDNN fuses into the filter gradient; see
  `functional.add_bias`).
- kernel_gradient: `functional.scaled_kernel`'s gradient as autodiff
  derives it (the library's) against one written out by hand
  (`_scaled_kernel_written_out`), which spends fewer passes over the kernel
  on paper.
- absorb_shifts: `nin(absorb_shifts=True)`, the `- c1/c2` of each layer
  taken by the next, against every layer centring its own output.
"""

import contextlib

from absl import app
from absl import flags
from keras import ops

from benchmarks import harness
from normprop_tf import functional

_EXPERIMENT = flags.DEFINE_enum(
    'experiment', 'kernel_gradient', ['bias_add', 'kernel_gradient',
                                      'absorb_shifts'], 'What to compare.')
_CELLS = flags.DEFINE_list('cells', ['1.0:128', '1.0:50', '0.5:128', '0.5:50'],
                           'width:batch pairs.')
_REPS = flags.DEFINE_integer('repetitions', 7, 'Timings per variant (median).')


@contextlib.contextmanager
def _patched(name, value):
  """`functional.<name>` replaced by `value` while a step is traced."""
  default = getattr(functional, name)
  setattr(functional, name, value)
  try:
    yield
  finally:
    setattr(functional, name, default)


def _scaled_kernel_written_out(kernel, gamma, divisor=1.0, post_scale=1.0):
  """`functional.scaled_kernel` with its gradient written out:
  with W' = W gamma f / n, dL/dgamma = f/n <dW', W> and
  dL/dW = (gamma f / n) (dW' - W <dW', W> / n^2), per unit."""
  axes = tuple(range(len(kernel.shape) - 1))
  factor = post_scale / divisor

  @ops.custom_gradient
  def scaled(kernel, gamma):
    norm = ops.sqrt(ops.sum(ops.square(kernel), axis=axes) +
                    functional.NORM_EPSILON)
    unit_scale = factor / norm
    scale = gamma * unit_scale

    def grad(*args, upstream=None):
      if upstream is None:
        (upstream,) = args
      dot = ops.sum(upstream * kernel, axis=axes)
      return ((upstream - kernel * (dot / ops.square(norm))) * scale,
              dot * unit_scale)

    return kernel * scale, grad

  # Values, not variables (a same-dtype cast reads without copying).
  return scaled(ops.cast(kernel, kernel.dtype), ops.cast(gamma, gamma.dtype))


# experiment: {variant: (nin keyword arguments, patch or None)}.
_VARIANTS = {
    'bias_add': {
        'normprop, +': ({}, ('add_bias', lambda y, bias: y + bias)),
        'normprop, ops.add': ({}, ('add_bias', ops.add)),
    },
    'kernel_gradient': {
        'normprop, autodiff gradient': ({}, None),
        'normprop, written-out gradient': (
            {}, ('scaled_kernel', _scaled_kernel_written_out)),
    },
    'absorb_shifts': {
        'normprop, shifts absorbed': ({'absorb_shifts': True}, None),
        'normprop, each layer centred': ({'absorb_shifts': False}, None),
    },
}


def _trainer(width, batch, nin_kwargs, patch, norm='normprop'):
  """A Trainer whose step was traced (first call) under `patch`."""
  with _patched(*patch) if patch else contextlib.nullcontext():
    trainer = harness.Trainer(norm, width, batch, **nin_kwargs)
    trainer(2)
  return trainer


def main(argv):
  del argv
  print(f'experiment: {_EXPERIMENT.value}')
  print('| width | batch | variant | ms per step | throughput vs plain |')
  print('|---|---|---|---:|---:|')
  for cell in _CELLS.value:
    width, batch = float(cell.split(':')[0]), int(cell.split(':')[1])
    trainers = {name: _trainer(width, batch, *spec)
                for name, spec in _VARIANTS[_EXPERIMENT.value].items()}
    trainers['plain'] = _trainer(width, batch, {}, None, norm='plain')
    times = harness.interleaved_medians(trainers, _REPS.value)
    for name, seconds in times.items():
      print(f'| {width} | {batch} | {name} | {1000 * seconds:.1f} | '
            f'{times["plain"] / seconds:.3f}x |', flush=True)


if __name__ == '__main__':
  app.run(main)
