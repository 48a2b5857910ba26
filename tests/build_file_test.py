"""BUILD mirrors the Python modules: a target per file, deps from imports.

Every module and test file has a target; every test file is a py_test;
every src exists; and every target's deps name the targets of all
repository modules its sources import (a missing dep is how a Bazel build
would break), with nothing in `normprop_tf`'s core depending on the
TensorFlow side.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
_PACKAGES = ('normprop_tf', 'data_prep', 'benchmarks', 'reports', 'tests')
_CORE = ('activations', 'functional', 'initializers', 'layers', 'models',
         'export')


def _targets():
  """Parses BUILD (Starlark is Python syntax here) into {name: call}."""
  tree = ast.parse((ROOT / 'BUILD').read_text())
  targets = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (
        node.func.id in ('py_library', 'py_test', 'py_binary')):
      kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords
            if k.arg in ('name', 'srcs', 'main', 'deps')}
      kw['rule'] = node.func.id
      assert kw['name'] not in targets, f'duplicate target {kw["name"]}'
      targets[kw['name']] = kw
  return targets


def _python_files():
  for package in _PACKAGES:
    for path in sorted((ROOT / package).rglob('*.py')):
      yield path.relative_to(ROOT).as_posix()


def _module(path):
  name = path[:-3].replace('/', '.')
  return name[:-len('.__init__')] if name.endswith('.__init__') else name


def _imported_files(path, modules):
  """Repository files that `path` imports (`from a import b`: a.b if it is
  a module, else a)."""
  found = set()
  for node in ast.walk(ast.parse((ROOT / path).read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in
               modules else node.module for a in node.names]
    else:
      continue
    found |= {modules[n] for n in names if n in modules}
  return found - {path}


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


def test_deps_cover_every_import_and_the_core_stays_tensorflow_free():
  targets = _targets()
  owner = {src: name for name, t in targets.items()
           for src in t.get('srcs', [])}
  modules = {_module(p): p for p in _python_files()}
  missing = []
  for name, t in targets.items():
    deps = {d.lstrip(':') for d in t.get('deps', [])}
    for src in t.get('srcs', []):
      for imported in _imported_files(src, modules):
        if owner[imported] != name and owner[imported] not in deps:
          missing.append(f'{name} -> :{owner[imported]} ({src})')
  assert not missing, missing
  for core in _CORE:
    deps = {d.lstrip(':') for d in targets[core].get('deps', [])}
    assert not {d for d in deps if d.startswith(('data', 'training',
                                                 'preparation'))}, core
