"""The README's layer example runs and behaves as it says."""

import pathlib
import re

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
