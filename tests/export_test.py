"""fold(): NormProp and BN models become standard Keras layers, exactly."""

import subprocess
import sys
import tarfile
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from normprop_tf import export
from normprop_tf import layers
from normprop_tf import models
from tests.data_fixtures import TARBALL as CIFAR_JPG
_STANDARD = (keras.layers.Conv2D, keras.layers.Dense, keras.layers.Activation,
             keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
             keras.layers.GlobalAveragePooling2D, keras.layers.Rescaling,
             keras.layers.InputLayer, keras.layers.LeakyReLU)


def _trained_like(norm, seed=0, **kw):
  """A NIN whose gamma, beta and BN statistics are far from their init."""
  keras.utils.set_random_seed(seed)
  model = models.nin(norm, width=0.25, dropout=0.2, **kw)
  rng = np.random.default_rng(seed)
  new = []
  for w in model.weights:
    v = w.numpy()
    if v.ndim == 1:  # gamma/beta/g/bias/BN statistics.
      v = np.abs(v + 0.3 * rng.standard_normal(v.shape)) if (
          'variance' in w.path or 'gamma' in w.path or w.path.endswith('/g')
      ) else v + 0.3 * rng.standard_normal(v.shape)
    new.append(v.astype('float32'))
  model.set_weights(new)
  return model


def _scaled_error(got, want):
  """max |got - want| / max |want|: relative to the output's scale."""
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.fixture(scope='module')
def cifar_images():
  """32 real CIFAR-10 test images, per-channel standardized."""
  images = []
  with tarfile.open(CIFAR_JPG) as tar:
    for member in tar:
      if member.isfile() and '/test/' in f'/{member.name}' and (
          member.name.endswith('.jpg')):
        images.append(tf.io.decode_jpeg(tar.extractfile(member).read()))
        if len(images) == 32:
          break
  x = np.stack([np.asarray(i, np.float32) for i in images])
  return (x - x.mean((0, 1, 2))) / x.std((0, 1, 2))


@pytest.mark.parametrize('norm', models.NORMS)
def test_fold_matches_on_random_and_real_images(norm, cifar_images):
  model = _trained_like(norm)
  folded = export.fold(model)
  assert all(isinstance(l, _STANDARD) for l in folded.layers), [
      type(l).__name__ for l in folded.layers]
  noise = np.random.default_rng(1).standard_normal((16, 32, 32, 3)).astype(
      'float32')
  for x in (noise, cifar_images):
    want = model(x, training=False).numpy()
    assert _scaled_error(folded(x).numpy(), want) < 1e-5


@pytest.mark.parametrize('absorb,want', [
    # nin's own shifts on the pooled maps, copied.
    (True, ['pool1_shift', 'pool2_shift']),
    # conv4 (5x5) and conv7 (3x3) follow a NormProp layer and pad with zeros.
    (False, ['conv4_shift', 'conv7_shift'])])
def test_fold_uses_explicit_shift_only_on_pooled_maps(absorb, want):
  folded = export.fold(_trained_like('normprop', absorb_shifts=absorb))
  shifts = [l.name for l in folded.layers
            if isinstance(l, keras.layers.Rescaling)]
  assert shifts == want


@pytest.mark.parametrize('absorb', [True, False])
def test_fold_is_exact_at_image_borders(absorb):
  """A constant input makes the border taps the only spatial variation."""
  model = _trained_like('normprop', seed=3, absorb_shifts=absorb)
  folded = export.fold(model)
  x = np.full((1, 32, 32, 3), 0.7, np.float32)
  probe_a = keras.Model(model.input, model.get_layer('conv4').output)
  probe_b = keras.Model(folded.input, folded.get_layer('conv4').output)
  a = probe_a(x).numpy()
  b = probe_b(x).numpy()  # Before the ReLU (and -c1/c2) of conv4 itself.
  # conv4's output: relu(u) / c2, minus c1/c2 unless it leaves it to conv5.
  c = a + (0.3989422804014327 / 0.5838193701035489 if
           model.get_layer('conv4').center_output else 0.0)
  assert _scaled_error(np.maximum(b, 0), c) < 1e-5
  assert np.std(a[0, :, 8, :]) > 1e-3  # Border rows differ from the rest.


def test_folded_model_saves_and_loads_without_normprop_tf(tmp_path):
  model = _trained_like('normprop', seed=4)
  folded = export.fold(model)
  folded.save(tmp_path / 'folded.keras')
  x = np.random.default_rng(4).standard_normal((4, 32, 32, 3)).astype(
      'float32')
  np.save(tmp_path / 'x.npy', x)
  np.save(tmp_path / 'y.npy', model(x).numpy())
  folded.export(tmp_path / 'saved_model', verbose=False)
  script = textwrap.dedent(f'''
      import sys
      sys.modules['normprop_tf'] = None  # Loading must not need it.
      import keras, numpy as np
      m = keras.saving.load_model({str(tmp_path / 'folded.keras')!r})
      x = np.load({str(tmp_path / 'x.npy')!r})
      y = np.load({str(tmp_path / 'y.npy')!r})
      err = np.max(np.abs(m(x).numpy() - y)) / np.max(np.abs(y))
      assert err < 1e-5, err
      import tensorflow as tf
      sm = tf.saved_model.load({str(tmp_path / 'saved_model')!r})
      err = np.max(np.abs(sm.serve(x).numpy() - y)) / np.max(np.abs(y))
      assert err < 1e-5, err
      print('OK')
  ''')
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0 and 'OK' in proc.stdout, proc.stderr[-3000:]


def test_fold_rejects_what_it_cannot_fold():
  model = keras.Sequential([keras.Input((8,)),
                            layers.NormPropDense(4, activation='tanh')])
  with pytest.raises(ValueError, match='positively homogeneous'):
    export.fold(model)
  inp = keras.Input((8,))
  a = layers.NormPropDense(4)(inp)
  b = keras.layers.Add()([a, inp[:, :4]])
  with pytest.raises(ValueError, match='single chain|cannot fold'):
    export.fold(keras.Model(inp, b))
