"""Numerics, gradients, batch independence and validation of normprop_tf.layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from normprop_tf import activations
from normprop_tf import functional
from normprop_tf import layers
from tests import reference

# Tolerances per dtype (float64 1e-10, float32 1e-5, mixed_float16 1e-2).
RTOL = {'float64': 1e-10, 'float32': 1e-5, 'mixed_float16': 1e-2}
ATOL = {'float64': 1e-12, 'float32': 1e-5, 'mixed_float16': 1e-2}


def _build(layer, x, seed=0):
  """Builds `layer` on x and gives it random weights (gamma, beta != init)."""
  layer(x)
  rng = np.random.default_rng(seed)
  kernel, gamma, beta = (v for v in layer.weights)
  kernel.assign(rng.standard_normal(kernel.shape) * 0.3)
  gamma.assign(rng.uniform(0.5, 1.5, gamma.shape))
  beta.assign(rng.uniform(-0.5, 0.5, beta.shape))
  return [np.asarray(v.numpy(), np.float64) for v in layer.weights]


def _reference_activation(activation):
  """f, c1 and c2 for reference.normprop; {} for the classifier form."""
  if activation is None:
    return {}
  m = activations.moments(activation)
  return dict(f=activations.numpy_fn(activation), c1=m.mean, c2=m.std)


def _input(shape, dtype, seed=1):
  x = np.random.default_rng(seed).standard_normal(shape)
  return x.astype('float16' if dtype == 'mixed_float16' else dtype)


@pytest.mark.parametrize('dtype', ['float64', 'float32', 'mixed_float16'])
@pytest.mark.parametrize('activation',
                         ['relu', 'tanh', 'gelu', 'leaky_relu:0.1', 'selu',
                          None])
@pytest.mark.parametrize('divisor', [None, 1.21])
def test_normprop_dense_matches_numpy(dtype, activation, divisor):
  x = _input((7, 5), dtype)
  layer = layers.NormPropDense(4, activation=activation, dtype=dtype,
                               weight_norm_divisor=divisor)
  w, gamma, beta = _build(layer, x)
  got = np.asarray(layer(x), np.float64)
  kw = _reference_activation(activation)
  want = reference.normprop(x, w, gamma, beta, divisor=divisor or 1.0, **kw)
  np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize('dtype', ['float64', 'float32', 'mixed_float16'])
@pytest.mark.parametrize('activation', ['relu', 'silu', None])
@pytest.mark.parametrize('stride,padding', [(1, 'same'), (2, 'same'),
                                            (1, 'valid')])
def test_normprop_conv_matches_numpy(dtype, activation, stride, padding):
  x = _input((2, 7, 7, 3), dtype)
  layer = layers.NormPropConv2D(4, 3, strides=stride, padding=padding,
                                activation=activation, dtype=dtype)
  w, gamma, beta = _build(layer, x)
  got = np.asarray(layer(x), np.float64)
  kw = _reference_activation(activation)
  want = reference.normprop(x, w, gamma, beta, conv=True, stride=stride,
                            padding=padding, **kw)
  np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize('dtype', ['float64', 'float32'])
@pytest.mark.parametrize('cls,conv', [(layers.WeightNormDense, False),
                                      (layers.WeightNormConv2D, True)])
def test_weight_norm_matches_numpy(dtype, cls, conv):
  shape = (2, 6, 6, 3) if conv else (7, 5)
  x = _input(shape, dtype)
  layer = cls(4, 3, activation='relu', dtype=dtype) if conv else cls(
      4, activation='relu', dtype=dtype)
  v, g, b = _build(layer, x)
  got = np.asarray(layer(x), np.float64)
  want = reference.weight_norm(x, v, g, b, f=lambda u: np.maximum(u, 0),
                               conv=conv)
  np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=ATOL[dtype])


def test_mixed_precision_keeps_weights_and_norms_float32():
  layer = layers.NormPropConv2D(4, 3, dtype='mixed_bfloat16')
  out = layer(_input((1, 5, 5, 3), 'float32'))
  assert out.dtype == 'bfloat16'
  assert all(v.dtype == 'float32' for v in layer.weights)


def _loss_and_grads(layer, x, r):
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer(x) * r)
  return loss, tape.gradient(loss, layer.trainable_weights)


@pytest.mark.parametrize('make,shape', [
    (lambda: layers.NormPropDense(3, dtype='float64'), (6, 4)),
    (lambda: layers.NormPropDense(3, activation='tanh', dtype='float64'),
     (6, 4)),
    (lambda: layers.NormPropConv2D(3, 3, dtype='float64'), (2, 5, 5, 2)),
    (lambda: layers.WeightNormConv2D(3, 3, dtype='float64'), (2, 5, 5, 2)),
])
def test_gradients_match_finite_differences(make, shape):
  """Kernel, gamma and beta gradients vs central differences (float64).

  Step 1e-6 gives truncation error ~1e-12 and rounding ~1e-10, so the
  analytic and numeric gradients agree to rtol 1e-6 unless a ReLU kink sits
  within 1e-6 of a pre-activation (the seeded data avoids that).
  """
  layer = make()
  x = tf.constant(_input(shape, 'float64'))
  _build(layer, x, seed=3)
  r = tf.constant(np.random.default_rng(4).standard_normal(layer(x).shape))
  _, grads = _loss_and_grads(layer, x, r)
  eps = 1e-6
  for var, grad in zip(layer.trainable_weights, grads):
    base = var.numpy().copy()
    numeric = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
      for sign in (1, -1):
        bumped = base.copy()
        bumped[idx] += sign * eps
        var.assign(bumped)
        numeric[idx] += sign * float(tf.reduce_sum(layer(x) * r)) / (2 * eps)
    var.assign(base)
    np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-6, atol=1e-8,
                               err_msg=var.name)


@pytest.mark.parametrize('make,shape', [
    (lambda: layers.NormPropDense(8, dtype='float64'), (16, 10)),
    (lambda: layers.NormPropConv2D(8, 3, dtype='float64'), (4, 6, 6, 3)),
])
def test_gradient_flows_through_the_norm(make, shape):
  """Scale invariance: <dL/dW_i, W_i> = 0 for every unit, with gamma fixed.

  Had the norm been wrapped in stop_gradient, the gradient would be
  (gamma/||W_i||) dL/du x, whose inner product with W_i is not 0: the check
  below would fail by orders of magnitude.
  """
  layer = make()
  x = tf.constant(_input(shape, 'float64'))
  _build(layer, x, seed=5)
  r = tf.constant(np.random.default_rng(6).standard_normal(layer(x).shape))
  _, (dw, _, _) = _loss_and_grads(layer, x, r)
  w = layer.kernel.numpy().reshape(-1, layer.kernel.shape[-1])
  dw = dw.numpy().reshape(w.shape)
  inner = np.sum(dw * w, axis=0)
  scale = np.linalg.norm(dw, axis=0) * np.linalg.norm(w, axis=0)
  assert np.all(scale > 1e-3)  # The gradients themselves are not tiny.
  np.testing.assert_array_less(np.abs(inner) / scale, 1e-10)


def test_batch_independence_and_train_equals_inference():
  """An example's output alone equals its output inside a batch of 128."""
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((16, 16, 3)),
      layers.NormPropConv2D(16, 3),
      layers.NormPropConv2D(16, 3, strides=2),
      keras.layers.Flatten(),
      layers.NormPropDense(32),
      layers.NormPropDense(10, activation=None),
  ])
  batch = np.random.default_rng(7).standard_normal(
      (128, 16, 16, 3)).astype('float32')
  together = model(batch, training=False).numpy()
  for i in (0, 57, 127):
    alone = model(batch[i:i + 1], training=False).numpy()
    np.testing.assert_allclose(alone[0], together[i], rtol=0, atol=1e-6)
  np.testing.assert_array_equal(model(batch, training=True).numpy(), together)


def _invalid(fn, arg):
  with pytest.raises(ValueError, match=f'Received: {arg}='):
    fn()


@pytest.mark.parametrize('fn,arg', [
    (lambda: layers.NormPropDense(0), 'units'),
    (lambda: layers.NormPropDense(2.5), 'units'),
    (lambda: layers.NormPropDense(True), 'units'),
    (lambda: layers.NormPropDense(4, activation='bogus'), 'activation'),
    (lambda: layers.NormPropDense(4, activation='leaky_relu:2'),
     'activation'),
    (lambda: layers.NormPropDense(4, activation=3), 'activation'),
    (lambda: layers.NormPropDense(4, weight_norm_divisor=0),
     'weight_norm_divisor'),
    (lambda: layers.NormPropDense(4, weight_norm_divisor=float('inf')),
     'weight_norm_divisor'),
    (lambda: layers.NormPropDense(4, gamma_initializer='nope'),
     'gamma_initializer'),
    (lambda: layers.NormPropDense(4, beta_initializer=5),
     'beta_initializer'),
    (lambda: layers.NormPropDense(4, kernel_initializer='nope'),
     'kernel_initializer'),
    (lambda: layers.NormPropConv2D(0, 3), 'filters'),
    (lambda: layers.NormPropConv2D(4, (3, 0)), 'kernel_size'),
    (lambda: layers.NormPropConv2D(4, 3, strides=-1), 'strides'),
    (lambda: layers.NormPropConv2D(4, 3, padding='causal'), 'padding'),
    (lambda: layers.NormPropConv2D(4, 3, dilation_rate=(1, 2, 3)),
     'dilation_rate'),
    (lambda: layers.NormPropDense(4, input_shift='abc'), 'input_shift'),
    (lambda: layers.NormPropDense(4, input_shift=float('nan')),
     'input_shift'),
    (lambda: layers.NormPropDense(4, center_output='no'), 'center_output'),
    (lambda: layers.NormPropDense(4, activation='tanh', center_output=False),
     'center_output'),
    (lambda: layers.NormPropConv2D(4, 1, activation=None,
                                   center_output=False), 'center_output'),
    (lambda: layers.WeightNormDense(-2), 'units'),
    (lambda: layers.WeightNormDense(2, activation='bogus'), 'activation'),
    (lambda: layers.WeightNormConv2D(2, 3, padding='full'), 'padding'),
    (lambda: layers.WeightNormConv2D(2, 3, g_initializer='nope'),
     'g_initializer'),
])
def test_bad_arguments_raise_value_error_naming_the_argument(fn, arg):
  _invalid(fn, arg)


_SHIFT = reference.C1 / reference.C2  # What a relu layer leaves to the next.


@pytest.mark.parametrize('make,shape', [
    (lambda **kw: layers.NormPropDense(4, **kw), (6, 5)),
    (lambda **kw: layers.NormPropDense(4, activation='tanh', **kw), (6, 5)),
    (lambda **kw: layers.NormPropConv2D(4, 5, **kw), (2, 9, 8, 3)),
    (lambda **kw: layers.NormPropConv2D(4, 3, strides=2, **kw), (2, 9, 8, 3)),
    (lambda **kw: layers.NormPropConv2D(4, 3, dilation_rate=2, **kw),
     (2, 9, 8, 3)),
    (lambda **kw: layers.NormPropConv2D(4, 1, **kw), (2, 5, 5, 3)),
    (lambda **kw: layers.NormPropConv2D(4, 3, padding='valid', **kw),
     (2, 6, 6, 3)),
    (lambda **kw: layers.NormPropConv2D(4, 3, activation=None, **kw),
     (2, 6, 6, 3)),
])
@pytest.mark.parametrize('route,ratio', [('bias', 0), ('subtract', 10**9)])
def test_input_shift_is_the_function_of_the_shifted_input(make, shape, route,
                                                          ratio, monkeypatch):
  """layer(input_shift=s)(x + s) == layer(x), float64 within 1e-10, by
  either route: the bias takes s * sum(W), and 'same' borders pad with s
  (so they see the zeros the unshifted input has); or s is subtracted from
  the input. The probe's intermediates too."""
  monkeypatch.setattr(functional, 'SHIFT_ABSORB_RATIO', ratio)
  assert functional.absorbs_shift(shape, (1,)) == (route == 'bias')
  x = _input(shape, 'float64', seed=8)
  plain = make(dtype='float64')
  weights = _build(plain, x, seed=9)
  shifted = make(dtype='float64', input_shift=_SHIFT)
  shifted(x)
  shifted.set_weights(weights)
  np.testing.assert_allclose(shifted(x + _SHIFT), plain(x), rtol=1e-10,
                             atol=1e-12)
  want = plain(x, return_intermediates=True)
  got = shifted(x + _SHIFT, return_intermediates=True)
  for part in want:
    np.testing.assert_allclose(got[part], want[part], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('make,shape', [
    (lambda **kw: layers.NormPropDense(4, **kw), (6, 5)),
    (lambda **kw: layers.NormPropConv2D(4, 3, **kw), (2, 6, 6, 3)),
    (lambda **kw: layers.NormPropConv2D(4, 3, activation='leaky_relu:0.1',
                                        **kw), (2, 6, 6, 3)),
])
def test_uncentered_output_exceeds_the_output_by_output_shift(make, shape):
  """center_output=False: the output plus nothing else is o + c1/c2
  (1e-10), and `output_shift` says so; the probe's 'output' stays o."""
  x = _input(shape, 'float64', seed=10)
  centred = make(dtype='float64')
  weights = _build(centred, x, seed=11)
  uncentred = make(dtype='float64', center_output=False)
  uncentred(x)
  uncentred.set_weights(weights)
  assert centred.output_shift == 0.0
  m = activations.moments(centred.activation)
  assert uncentred.output_shift == pytest.approx(m.mean / m.std, rel=1e-15)
  np.testing.assert_allclose(
      np.asarray(uncentred(x)) - uncentred.output_shift, centred(x),
      rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(
      uncentred(x, return_intermediates=True)['output'],
      centred(x, return_intermediates=True)['output'], rtol=1e-10,
      atol=1e-12)


def test_input_shift_with_same_padding_needs_a_known_size():
  layer = layers.NormPropConv2D(4, 3, input_shift=0.5)
  inputs = keras.Input((None, None, 3))
  with pytest.raises(ValueError, match='known input height and width'):
    layer(inputs)


@pytest.mark.parametrize('policy', ['float32', 'mixed_float16'])
@pytest.mark.parametrize('make,shape', [
    (lambda: layers.NormPropDense(5), (None, 7, 3)),
    (lambda: layers.WeightNormDense(5, activation='relu'), (None, 3)),
    (lambda: layers.NormPropConv2D(4, 3, padding='valid'), (None, 9, 8, 2)),
    (lambda: layers.NormPropConv2D(4, 3, strides=2), (None, None, 7, 2)),
    (lambda: layers.NormPropConv2D(4, (3, 2), strides=(2, 3),
                                   padding='valid'), (2, 11, 10, 2)),
    (lambda: layers.NormPropConv2D(4, 3, dilation_rate=2, padding='valid',
                                   activation=None), (None, 9, 9, 2)),
    (lambda: layers.WeightNormConv2D(4, 1, strides=2), (None, 5, 5, 2)),
])
def test_symbolic_output_spec_is_what_the_layer_computes(make, shape,
                                                         policy):
  """The shape-only spec (no symbolic trace) against an eager call."""
  concrete = tuple(6 if n is None else n for n in shape)
  x = np.random.default_rng(0).standard_normal(concrete).astype('float32')
  for intermediates in (False, True):
    layer = make()
    layer.dtype_policy = keras.DTypePolicy(policy)
    spec = layer(keras.Input(batch_shape=shape), return_intermediates=(
        intermediates))
    out = layer(x, return_intermediates=intermediates)
    specs, outs = (spec, out) if intermediates else (
        {'output': spec}, {'output': out})
    assert specs.keys() == outs.keys()
    for key, got in specs.items():
      want = outs[key]
      assert got.dtype == want.dtype == layer.compute_dtype, key
      # Unknown exactly where the input's is; every other size as computed.
      assert len(got.shape) == len(want.shape) == len(shape), key
      assert [n is None for n in got.shape[:-1]] == [
          n is None for n in shape[:-1]], (key, got.shape)
      assert all(n in (None, m) for n, m in zip(got.shape, want.shape)), (
          key, got.shape, want.shape)
      assert got.shape[-1] == want.shape[-1], key


def test_bad_input_shapes_raise_value_error():
  with pytest.raises(ValueError, match='found ndim=3'):
    layers.NormPropConv2D(4, 3)(np.zeros((2, 5, 3), 'float32'))
  with pytest.raises(ValueError, match='rank 4'):
    layers.NormPropConv2D(4, 3)(np.zeros((2, 5, 5, 5, 3), 'float32'))
  with pytest.raises(ValueError, match='input_shape'):
    layers.NormPropDense(4).build((None, None))


def test_default_gamma_follows_paper_and_divisor():
  dense = layers.NormPropDense(3)
  dense.build((None, 4))
  np.testing.assert_allclose(dense.gamma.numpy(), 1 / 1.21, rtol=1e-7)
  authors = layers.NormPropDense(3, weight_norm_divisor=1.21)
  authors.build((None, 4))
  np.testing.assert_allclose(authors.gamma.numpy(), 1.0)
  tanh = layers.NormPropDense(3, activation='tanh')
  tanh.build((None, 4))
  np.testing.assert_allclose(tanh.gamma.numpy(),
                             activations.moments('tanh').gamma0, rtol=1e-7)
  # The authors' form and the default compute the same function.
  x = _input((5, 4), 'float32')
  authors.kernel.assign(dense.kernel)
  np.testing.assert_allclose(authors(x), dense(x), rtol=1e-6, atol=1e-6)


def test_default_kernel_has_unit_norm_units():
  for layer, shape in [(layers.NormPropConv2D(192, 5), (None, 8, 8, 3)),
                       (layers.NormPropConv2D(96, 1), (None, 8, 8, 160)),
                       (layers.NormPropDense(50), (None, 20))]:
    layer.build(shape)
    np.testing.assert_allclose(reference.unit_norm(layer.kernel.numpy()), 1.0,
                               rtol=1e-5)


def test_weights_are_named():
  dense = layers.NormPropDense(3)
  dense.build((None, 4))
  assert [w.path.split('/')[-1] for w in dense.weights] == [
      'kernel', 'gamma', 'beta']
  wn = layers.WeightNormDense(3)
  wn.build((None, 4))
  assert [w.path.split('/')[-1] for w in wn.weights] == ['kernel', 'g', 'bias']
