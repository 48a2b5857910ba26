"""`diagnostics` (probe, statistics, estimate gaps) and the `fit` callback.

Every number is checked against NumPy on the probe's own tensors or on
sub-models that share the weights: the gap definitions of
docs/tensorboard.md, on nin() models and on user-style models
(functional and Sequential) built from normprop_tf and Keras layers.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import normprop_tf as npt
from normprop_tf import callbacks
from normprop_tf import diagnostics
from normprop_tf import models

RTOL = 1e-4  # float32 moments over ~1e4 values, against float64 NumPy.


def _moments(x):
  x = np.asarray(x, np.float64)
  axes = tuple(range(x.ndim - 1))
  return x.mean(axis=axes), x.std(axis=axes)


def _summary(model, x):
  probe = diagnostics.probe_model(model)
  scalars, histograms = diagnostics.summarize(
      diagnostics.statistics(probe(x)), probe.unit_kinds)
  return probe, scalars, histograms


def _user_model():
  """What a user might build: NormProp, Conv+BN+ReLU, NormPropDense, Dense."""
  inputs = keras.Input((8, 8, 3))
  x = npt.NormPropConv2D(6, 3, activation='relu', name='np_conv')(inputs)
  x = keras.layers.Conv2D(5, 3, padding='same', use_bias=False,
                          name='conv')(x)
  x = keras.layers.BatchNormalization(name='bn')(x)
  x = keras.layers.ReLU(name='relu')(x)
  x = keras.layers.Flatten()(x)
  x = npt.NormPropDense(7, activation='relu', name='np_dense')(x)
  return keras.Model(inputs, keras.layers.Dense(3, name='head')(x))


def test_normprop_gap_is_the_distance_from_unit_statistics():
  keras.utils.set_random_seed(1)
  model = models.nin('normprop', width=0.1)
  images = np.random.default_rng(0).standard_normal(
      (16, 32, 32, 3)).astype(np.float32)
  probe, scalars, histograms = _summary(model, images)
  outputs = probe(images)
  gaps = []
  for layer in models.hidden_layer_names():
    mean, std = _moments(outputs[f'{layer}/normalized'])
    assert scalars[f'ics/{layer}/gap_mean'] == pytest.approx(
        np.mean(np.abs(mean)), rel=RTOL, abs=1e-6)
    assert scalars[f'ics/{layer}/gap_std'] == pytest.approx(
        np.mean(np.abs(std - 1)), rel=RTOL, abs=1e-6)
    gaps.append(np.mean(np.abs(std - 1)))
    out_mean, out_std = _moments(outputs[f'{layer}/output'])
    assert scalars[f'ics/{layer}/output_gap_std'] == pytest.approx(
        np.mean(np.abs(out_std - 1)), rel=RTOL, abs=1e-6)
    assert scalars[f'stats/{layer}/output/mean'] == pytest.approx(
        np.mean(out_mean), rel=RTOL, abs=1e-6)
    assert histograms[f'stats/{layer}/output'].size <= 4096
  assert scalars['ics/mean_over_layers/gap_std'] == pytest.approx(
      np.mean(gaps), rel=RTOL)
  # At initialization on Gaussian input the first projection is ~N(0, 1).
  assert scalars['ics/conv1/gap_std'] < 0.15


def test_batchnorm_normalized_is_its_input_standardized_by_moving_stats():
  keras.utils.set_random_seed(1)
  model = models.nin('batchnorm', width=0.1)
  rng = np.random.default_rng(0)
  images = (3 * rng.standard_normal((16, 32, 32, 3)) + 1).astype(np.float32)
  bn = model.get_layer('conv2_bn')
  bn.moving_mean.assign(rng.standard_normal(bn.moving_mean.shape))
  bn.moving_variance.assign(rng.uniform(0.5, 2, bn.moving_variance.shape))
  probe, scalars, _ = _summary(model, images)
  conv = keras.Model(model.input, model.get_layer('conv2').output)(images)
  scale = np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
  z = (np.asarray(conv, np.float64) - bn.moving_mean.numpy()) / scale
  np.testing.assert_allclose(probe(images)['conv2/normalized'], z,
                             rtol=RTOL, atol=1e-5)
  mean, std = _moments(z)
  assert scalars['stats/conv2/normalized/std'] == pytest.approx(
      np.mean(std), rel=RTOL)
  assert scalars['ics/conv2/gap_mean'] == pytest.approx(
      np.mean(np.abs(mean)), rel=RTOL)
  assert scalars['ics/conv2/gap_std'] == pytest.approx(
      np.mean(np.abs(std - 1)), rel=RTOL)
  assert 'ics/conv2/output_gap_mean' not in scalars  # BN makes no such claim.


def test_one_vocabulary_for_every_method():
  x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(
      np.float32)
  tags = {}
  for norm in ('normprop', 'batchnorm'):
    model = models.nin(norm, width=0.1)
    _, scalars, _ = _summary(model, x)
    tags[norm] = ({t for t in scalars if 'output_gap' not in t} |
                  set(diagnostics.weight_statistics(model)))
  # NormProp's classifier has a gamma; BN's is a plain conv.
  assert tags['normprop'] - tags['batchnorm'] == {'weights/classifier/scale'}
  assert tags['batchnorm'] <= tags['normprop']
  assert 'weights/conv3/scale' in tags['batchnorm']  # BN's gamma, same tag.
  assert len([t for t in tags['normprop'] if t.endswith('/gap_mean')]) == 9


def test_probe_of_a_user_model():
  keras.utils.set_random_seed(2)
  model = _user_model()
  x = np.random.default_rng(3).standard_normal((32, 8, 8, 3)).astype(
      np.float32)
  model.get_layer('bn').moving_mean.assign(np.full(5, 0.3, np.float32))
  probe = diagnostics.probe_model(model)
  assert probe.unit_kinds == {'np_conv': 'normprop', 'bn': 'batchnorm',
                              'np_dense': 'normprop'}
  out = probe(x)
  np.testing.assert_allclose(out['logits'], model(x), rtol=1e-5, atol=1e-6)
  dense = model.get_layer('np_dense')
  inputs = np.asarray(keras.Model(model.input, dense.input)(x), np.float64)
  w = dense.kernel.numpy().astype(np.float64)
  np.testing.assert_allclose(out['np_dense/normalized'],
                             inputs @ w / np.linalg.norm(w, axis=0),
                             rtol=RTOL, atol=1e-5)
  bn = model.get_layer('bn')
  conv = np.asarray(keras.Model(model.input, bn.input)(x), np.float64)
  np.testing.assert_allclose(
      out['bn/normalized'], (conv - 0.3) / np.sqrt(1 + bn.epsilon),
      rtol=RTOL, atol=1e-5)
  np.testing.assert_allclose(out['bn/output'], np.asarray(
      keras.Model(model.input, model.get_layer('relu').output)(x)),
                             rtol=1e-6)
  weights = diagnostics.weight_statistics(model)
  np.testing.assert_allclose(weights['weights/bn/kernel_norm'], np.linalg.norm(
      model.get_layer('conv').kernel.numpy().reshape(-1, 5), axis=0),
                             rtol=1e-6)
  assert set(weights) == {'weights/np_conv/kernel_norm',
                          'weights/np_conv/scale', 'weights/bn/kernel_norm',
                          'weights/bn/scale', 'weights/np_dense/kernel_norm',
                          'weights/np_dense/scale', 'weights/head/kernel_norm'}


def test_probe_of_a_sequential_model():
  model = keras.Sequential([
      keras.Input((4,)), npt.NormPropDense(5, activation='relu', name='a'),
      keras.layers.Dense(6, name='b'), keras.layers.BatchNormalization(
          name='b_bn'), keras.layers.Activation('relu'),
      keras.layers.Dense(2)])
  probe = diagnostics.probe_model(model)
  assert probe.unit_kinds == {'a': 'normprop', 'b': 'batchnorm'}
  x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
  np.testing.assert_allclose(probe(x)['logits'], model(x), rtol=1e-5,
                             atol=1e-6)


def _fit_with_callback(tmp_path, **kwargs):
  keras.utils.set_random_seed(4)
  model = _user_model()
  rng = np.random.default_rng(5)
  x = rng.standard_normal((64, 8, 8, 3)).astype(np.float32)
  y = rng.integers(0, 3, 64)
  model.compile(keras.optimizers.SGD(0.05),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  hook = callbacks.HiddenStatistics(x[:16], every_steps=3, **kwargs)
  model.fit(x, y, batch_size=16, epochs=2, callbacks=[hook], verbose=0)
  return model, x, hook


def test_callback_logs_the_statistics_of_the_trained_model(tmp_path):
  model, x, hook = _fit_with_callback(
      tmp_path, log_dir=str(tmp_path / 'tb'),
      records_file=str(tmp_path / 'r.jsonl'))
  # 8 steps: at the start, every 3 steps, and at the end.
  assert [step for step, _ in hook.history] == [0, 3, 6, 8]
  _, expected, _ = _summary(model, x[:16])
  final = hook.history[-1][1]
  assert final.keys() == expected.keys()
  for tag, value in expected.items():
    assert final[tag] == pytest.approx(value, rel=1e-5, abs=1e-7), tag
  assert hook.history[0][1] != final  # Training moved them.
  rows = [json.loads(l) for l in (tmp_path / 'r.jsonl').read_text().splitlines()]
  assert len(rows) == 4 * len(final)
  acc = event_accumulator.EventAccumulator(
      str(tmp_path / 'tb' / 'train'), size_guidance={'tensors': 0})
  acc.Reload()
  events = acc.Tensors('ics/mean_over_layers/gap_std')
  assert [e.step for e in events] == [0, 3, 6, 8]
  assert float(tensor_util.make_ndarray(events[-1].tensor_proto)) == pytest.approx(
      final['ics/mean_over_layers/gap_std'], rel=1e-6)
  meta = acc.SummaryMetadata('ics/np_conv/gap_mean')
  assert 'mean_c |E z_c|' in meta.summary_description
  assert 'weights/bn/scale' in acc.Tags()['tensors']
  root = event_accumulator.EventAccumulator(str(tmp_path / 'tb'),
                                            size_guidance={'tensors': 0})
  root.Reload()
  assert 'custom_scalars__config__' in root.Tags()['tensors']


def test_callback_rejects_bad_arguments_and_models_without_units():
  with pytest.raises(ValueError, match='every_steps'):
    callbacks.HiddenStatistics(np.zeros((2, 4), np.float32), every_steps=0)
  with pytest.raises(ValueError, match='probe_data'):
    callbacks.HiddenStatistics(np.zeros((0, 4), np.float32))
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
  model.compile('sgd', 'mse')
  with pytest.raises(ValueError, match='found no NormProp'):
    model.fit(np.zeros((4, 4)), np.zeros((4, 2)), verbose=0, callbacks=[
        callbacks.HiddenStatistics(np.zeros((2, 4), np.float32))])


_JAX_CALLBACK = textwrap.dedent('''
    import importlib.abc, json, sys
    class _NoTensorFlow(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path, target=None):
        if name.split('.')[0] == 'tensorflow':
          raise ImportError(name)
    sys.meta_path.insert(0, _NoTensorFlow())
    import keras, numpy as np
    import normprop_tf as npt
    assert keras.backend.backend() == 'jax'
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)),
                              npt.NormPropDense(8, activation='relu'),
                              keras.layers.Dense(3)])
    model.compile('sgd', keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    x = np.random.default_rng(0).standard_normal((40, 6)).astype('float32')
    hook = npt.callbacks.HiddenStatistics(x, every_steps=2,
                                          records_file=sys.argv[1])
    model.fit(x, np.arange(40) % 3, batch_size=10, epochs=1, verbose=0,
              callbacks=[hook])
    probe = npt.diagnostics.probe_model(model)
    z = np.asarray(probe(x)['norm_prop_dense/normalized'], np.float64)
    print(json.dumps({'steps': [s for s, _ in hook.history],
                      'gap': hook.history[-1][1]['ics/norm_prop_dense/gap_std'],
                      'expected': float(np.mean(np.abs(z.std(0) - 1)))}))
''')


def test_callback_under_jax_without_tensorflow(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-c', _JAX_CALLBACK, str(tmp_path / 'r.jsonl')],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, KERAS_BACKEND='jax', JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['steps'] == [0, 2, 4]
  assert result['gap'] == pytest.approx(result['expected'], rel=RTOL)
  assert (tmp_path / 'r.jsonl').read_text().count('\n') > 0
