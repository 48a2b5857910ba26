"""InputNormalization: same numbers as the pipeline, on raw uint8 input, and a
.keras save/load round trip."""

import keras
import numpy as np
import pytest

from normprop_tf import data
from normprop_tf.data import InputNormalization

pytest_plugins = ('tests.data_fixtures',)

# The layer and the pipeline run the same float32 math on the same weights.
# Standardize is elementwise: measured identical. ZCA's length-3072 dot
# products may be accumulated in another order: outputs up to ~10, measured
# differences ~3e-5 -> rtol 1e-5 + atol 1e-4.
_TOL = {'standardize': {'rtol': 0, 'atol': 1e-6},
        'zca': {'rtol': 1e-5, 'atol': 1e-4}}


@pytest.fixture(scope='module')
def test_split(prepared):
  return data.read_split(prepared[0], 'test')


@pytest.mark.parametrize('mode', ['standardize', 'zca'])
def test_matches_the_pipeline_on_uint8_input(prepared, test_split, mode):
  layer = InputNormalization.from_stats(prepared[0], mode=mode)
  images = test_split[0]
  assert images.dtype == np.uint8
  out = keras.ops.convert_to_numpy(layer(images))
  ds = data.make_dataset(prepared[0], 'test', 100, preprocessing=mode)
  expected = next(iter(ds))[0].numpy()
  assert out.shape == expected.shape == (100, 32, 32, 3)
  np.testing.assert_allclose(out, expected, **_TOL[mode])


@pytest.mark.parametrize('mode', ['standardize', 'zca'])
def test_keras_save_and_load_round_trip(prepared, test_split, tmp_path, mode):
  inputs = keras.Input((32, 32, 3), dtype='uint8')
  outputs = InputNormalization.from_stats(prepared[0], mode=mode,
                                          name='norm')(inputs)
  model = keras.Model(inputs, outputs)
  path = str(tmp_path / f'{mode}.keras')
  model.save(path)
  loaded = keras.models.load_model(path)
  layer = loaded.get_layer('norm')
  assert isinstance(layer, InputNormalization)
  assert layer.get_config() == model.get_layer('norm').get_config()
  assert not layer.trainable_weights
  for a, b in zip(model.get_layer('norm').weights, layer.weights):
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                  keras.ops.convert_to_numpy(b))
  x = test_split[0][:16]
  np.testing.assert_array_equal(
      keras.ops.convert_to_numpy(loaded(x)),
      keras.ops.convert_to_numpy(model(x)))


def test_config_round_trip_and_identity_init():
  layer = InputNormalization(mode='zca', epsilon=1e-2, gcn_scale=10.0,
                             name='n')
  config = layer.get_config()
  assert {k: config[k] for k in ('mode', 'epsilon', 'gcn_scale')} == {
      'mode': 'zca', 'epsilon': 1e-2, 'gcn_scale': 10.0}
  clone = InputNormalization.from_config(config)
  assert clone.get_config() == config
  fresh = InputNormalization()
  x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
  np.testing.assert_allclose(keras.ops.convert_to_numpy(fresh(x)),
                             x / (1 + 1e-3), rtol=1e-6)


@pytest.mark.parametrize('kwargs,match', [
    ({'mode': 'pca'}, "Received: mode='pca'"),
    ({'epsilon': 0}, 'Received: epsilon=0'),
    ({'gcn_scale': float('nan')}, 'Received: gcn_scale=nan'),
])
def test_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    InputNormalization(**kwargs)


def test_rejects_unknown_image_size():
  with pytest.raises(ValueError, match='static image shape'):
    InputNormalization().build((None, None, None, 3))


def test_exported_savedmodel_serves_raw_uint8(prepared, test_split, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((32, 32, 3), dtype='uint8')
  x = InputNormalization.from_stats(prepared[0])(inputs)
  model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
  model.export(str(tmp_path / 'sm'), verbose=False)
  loaded = tf.saved_model.load(str(tmp_path / 'sm'))
  served = loaded.serve
  images = test_split[0][:8]
  np.testing.assert_allclose(served(tf.constant(images)).numpy(),
                             keras.ops.convert_to_numpy(model(images)),
                             atol=1e-5)
  with pytest.raises((TypeError, ValueError)):
    served(tf.constant(images, tf.float32))  # the signature is uint8
