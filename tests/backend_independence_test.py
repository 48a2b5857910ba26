"""The core modules run under the JAX backend with TensorFlow unimportable.

The core (`activations`, `functional`, `initializers`, `layers`, `models`,
`export`) is what `pip install .` installs without extras: Keras and NumPy.
A subprocess with `KERAS_BACKEND=jax` and `tensorflow` made unimportable
loads TF-saved weights into every NIN variant, matches the TF outputs, takes
an SGD step, and folds the model with `export.fold` (the folded output must
match the unfolded one). `setup.py`'s core requirements are checked too.
"""

import ast
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np

from normprop_tf import models

_JAX_SCRIPT = textwrap.dedent('''
    import importlib.abc, json, sys

    class _NoTensorFlow(importlib.abc.MetaPathFinder):
      # As on a machine without TensorFlow: importing it fails, and it never
      # appears in sys.modules (Keras checks `'tensorflow' in sys.modules`).
      def find_spec(self, name, path, target=None):
        if name.split('.')[0] == 'tensorflow':
          raise ImportError(f'{name} is not installed here')

    sys.meta_path.insert(0, _NoTensorFlow())
    import keras
    import numpy as np
    import normprop_tf
    from normprop_tf import activations, export, functional, initializers
    from normprop_tf import input_normalization, layers, models
    assert normprop_tf.InputNormalization is input_normalization.InputNormalization
    assert keras.backend.backend() == 'jax', keras.backend.backend()
    tmp = sys.argv[1]
    x = np.load(f'{tmp}/x.npy')
    y = np.load(f'{tmp}/y.npy')
    result = {}
    for norm in models.NORMS:
      model = models.nin(norm, width=0.25)
      model.load_weights(f'{tmp}/{norm}.weights.h5')
      ref = np.load(f'{tmp}/{norm}.npy')
      got = np.asarray(model(x, training=False))
      # rtol 1e-5 (float32 layer tolerance), plus atol 1e-6 (~8 float32 ulps at 1)
      # for logits near 0, where a relative test alone is meaningless.
      excess = float(np.max(np.abs(got - ref) - 1e-5 * np.abs(ref)))
      model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(
                        from_logits=True))
      before = float(model.evaluate(x, y, verbose=0))
      model.train_on_batch(x, y)
      after = float(model.evaluate(x, y, verbose=0))
      folded = export.fold(model)
      want = np.asarray(model(x, training=False))
      folded_out = np.asarray(folded(x, training=False))
      fold_excess = float(np.max(np.abs(folded_out - want) -
                                 1e-5 * np.abs(want)))
      result[norm] = dict(excess=excess,
                          max_abs_err=float(np.max(np.abs(got - ref))),
                          before=before, after=after, fold_excess=fold_excess)
    assert not [m for m in sys.modules if m.split('.')[0] == 'tensorflow']
    print('RESULT ' + json.dumps(result))
''')


def test_nin_under_jax_matches_tensorflow_and_trains(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((8, 32, 32, 3)).astype('float32')
  y = rng.integers(0, 10, 8)
  np.save(tmp_path / 'x.npy', x)
  np.save(tmp_path / 'y.npy', y)
  for norm in models.NORMS:
    keras.utils.set_random_seed(1)
    model = models.nin(norm, width=0.25)
    # Non-trivial gamma/beta/BN statistics, so that every weight matters.
    model.set_weights([w + 0.1 * rng.standard_normal(w.shape).astype(w.dtype)
                       if w.ndim == 1 else w for w in model.get_weights()])
    model.save_weights(tmp_path / f'{norm}.weights.h5')
    np.save(tmp_path / f'{norm}.npy', np.asarray(model(x, training=False)))

  env = dict(os.environ, KERAS_BACKEND='jax', JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', _JAX_SCRIPT, str(tmp_path)],
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')][-1]
  result = json.loads(line[len('RESULT '):])
  assert set(result) == set(models.NORMS)
  for norm, r in result.items():
    assert r['excess'] <= 1e-6, (norm, r)  # |got - ref| <= 1e-6 + 1e-5|ref|.
    assert r['after'] < r['before'], (norm, r)
    assert r['fold_excess'] <= 1e-6, (norm, r)  # Folded, under JAX.


def test_core_install_requires_no_tensorflow():
  """`pip install .` without extras: Keras and NumPy only."""
  tree = ast.parse((pathlib.Path(__file__).resolve().parents[1] /
                    'setup.py').read_text())
  core = next(ast.literal_eval(k.value) for node in ast.walk(tree)
              if isinstance(node, ast.Call) for k in node.keywords
              if k.arg == 'install_requires')
  names = {re.split(r'[<>=\[ ]', requirement)[0] for requirement in core}
  assert names == {'keras', 'numpy'}, names
