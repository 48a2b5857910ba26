"""Every Python module and test file has a Bazel target in BUILD."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
_PACKAGES = ('normprop_tf', 'data_prep', 'benchmarks', 'reports', 'tests')


def _targets():
  """Parses BUILD (Starlark is Python syntax here) into {name: call}."""
  tree = ast.parse((ROOT / 'BUILD').read_text())
  targets = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (
        node.func.id in ('py_library', 'py_test', 'py_binary')):
      kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords
            if k.arg in ('name', 'srcs', 'main')}
      kw['rule'] = node.func.id
      assert kw['name'] not in targets, f'duplicate target {kw["name"]}'
      targets[kw['name']] = kw
  return targets


def _python_files():
  for package in _PACKAGES:
    for path in sorted((ROOT / package).rglob('*.py')):
      yield path.relative_to(ROOT).as_posix()


def test_every_module_and_test_has_a_target():
  targets = _targets()
  covered = {src for t in targets.values() for src in t.get('srcs', [])}
  missing = [p for p in _python_files() if p not in covered]
  assert not missing, f'add BUILD targets for: {missing}'


def test_every_test_file_is_a_py_test_and_every_src_exists():
  targets = _targets()
  tests = {t['main'] for t in targets.values() if t['rule'] == 'py_test'}
  for path in _python_files():
    if path.endswith('_test.py'):
      assert path in tests, f'{path} needs a py_test target'
  for t in targets.values():
    for src in t.get('srcs', []):
      assert (ROOT / src).is_file(), f'{t["name"]}: {src} does not exist'
