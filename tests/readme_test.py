"""The README's layer example runs and behaves as it says."""

import pathlib
import re

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_example_builds_a_working_model():
  text = (ROOT / 'README.md').read_text()
  code = re.search(r'```python\n(.*?)```', text, re.S).group(1)
  assert len(code.strip().splitlines()) <= 12  # "A 10-line example".
  scope = {}
  exec(compile(code, 'README.md', 'exec'), scope)  # pylint: disable=exec-used
  model = scope['model']
  x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(
      'float32')
  y = np.array([0, 1, 2, 3])
  logits = model(x)
  assert logits.shape == (4, 10)
  before = model.evaluate(x, y, verbose=0)
  model.fit(x, y, epochs=5, verbose=0)
  assert model.evaluate(x, y, verbose=0) < before


def test_readme_fold_example_matches_and_loads_as_plain_keras(tmp_path,
                                                              monkeypatch):
  """The second snippet: fold, save, reload without custom objects."""
  text = (ROOT / 'README.md').read_text()
  blocks = re.findall(r'```python\n(.*?)```', text, re.S)
  scope = {}
  exec(compile(blocks[0], 'README.md', 'exec'), scope)  # pylint: disable=exec-used
  monkeypatch.chdir(tmp_path)
  exec(compile(blocks[1], 'README.md', 'exec'), scope)  # pylint: disable=exec-used
  x = np.random.default_rng(1).standard_normal((4, 32, 32, 3)).astype(
      'float32')
  loaded = keras.models.load_model(tmp_path / 'nin_folded.keras')
  assert all(type(l).__module__.startswith('keras.') for l in loaded.layers)
  # Same tolerance as tests/export_test.py: 1e-5 relative (+1e-6 near 0).
  np.testing.assert_allclose(loaded(x), scope['model'](x), rtol=1e-5,
                             atol=1e-6)
