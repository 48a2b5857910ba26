"""The shape the code promises: small functions, layers that show the design.

- No function in `normprop_tf/` is longer than 85 lines (docstring
  included) or takes more than 13 parameters (`self` not counted; "about
  12" in the design brief).
- Nothing in `normprop_tf` imports the `data_prep` command-line package.
- The backend-free core (`activations`, `functional`, `initializers`,
  `layers`, `models`, `export`, `pooling`, `input_normalization`, `utils`,
  and the data package's `spec`, `errors`, `manifest`, `stats`) imports no
  TensorFlow, gin or absl at module level (the JAX test in
  backend_independence_test.py checks the same at run time).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'normprop_tf'
MAX_LINES = 85
# 'About 12': a layer's constructor mirrors its Keras counterpart's
# arguments (Keras' Conv2D takes 17), and nin() takes one per option.
MAX_PARAMS = 13
CORE = ['activations.py', 'functional.py', 'initializers.py', 'layers.py',
        'models.py', 'export.py', 'pooling.py', 'input_normalization.py',
        '__init__.py', 'utils/__init__.py', 'utils/checks.py',
        'utils/fileio.py', 'utils/hardware.py', 'data/spec.py',
        'data/errors.py', 'data/manifest.py', 'data/stats.py']
_TF_SIDE = ('tensorflow', 'gin', 'absl', 'tensorboard', 'tensorflow_datasets',
            'normprop_tf.training', 'normprop_tf.data.pipeline',
            'normprop_tf.data.schema', 'normprop_tf.data.preprocessing',
            'normprop_tf.data.augment', 'normprop_tf.data.preparation')


def _functions():
  for path in sorted(PACKAGE.rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        yield path.relative_to(ROOT).as_posix(), node


def _param_count(node):
  args = node.args
  names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
  names += [a.arg for a in (args.vararg, args.kwarg) if a]
  return len([n for n in names if n not in ('self', 'cls')])


def test_functions_are_small():
  long = [f'{p}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)'
          for p, n in _functions() if n.end_lineno - n.lineno + 1 > MAX_LINES]
  wide = [f'{p}:{n.lineno} {n.name} ({_param_count(n)} parameters)'
          for p, n in _functions() if _param_count(n) > MAX_PARAMS]
  assert not long and not wide, long + wide


def _module_level_imports(path):
  names = []
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Import):
      names += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.append(node.module)
  return names


def test_the_library_never_imports_the_data_prep_command():
  offenders = []
  for path in sorted(PACKAGE.rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import)
               else [node.module or ''] if isinstance(node, ast.ImportFrom)
               else [])
      offenders += [f'{path.name}: {n}' for n in names
                    if n == 'data_prep' or n.startswith('data_prep.')]
  assert not offenders, offenders


@pytest.mark.parametrize('module', CORE)
def test_the_core_imports_no_tensorflow(module):
  imports = _module_level_imports(PACKAGE / module)
  bad = [n for n in imports
         if any(n == t or n.startswith(t + '.') for t in _TF_SIDE)]
  assert not bad, bad
