"""Argument checks with one message format: "... Received: name=value".

Every layer, model builder, data function and training component validates
its arguments with these helpers, so that a bad value always fails early,
with a `ValueError` whose message says what was expected and ends with
`Received: name=value` (the Keras convention).

`ArgumentError` subclasses `ValueError`: callers that catch `ValueError`
keep working, and the training entry point can tell a user's bad setting
(print one line) from a bug (keep the traceback).
"""

import math
import numbers


class ArgumentError(ValueError):
  """A bad argument value. The message names the argument and the value."""


def fail(name, value, requirement):
  """Raises `ArgumentError('`name` <requirement>. Received: name=value')`."""
  raise ArgumentError(f'`{name}` {requirement}. Received: {name}={value!r}')


def is_integer(value):
  """True for ints and NumPy integers, False for bools and floats."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
  """True for real numbers (ints, floats, NumPy scalars), False for bools."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(name, value, minimum=None, maximum=None):
  """Returns `value` as an int, checking type and [minimum, maximum]."""
  if not is_integer(value):
    fail(name, value, 'must be an integer' + _bounds(minimum, maximum))
  if (minimum is not None and value < minimum) or (
      maximum is not None and value > maximum):
    fail(name, value, 'must be an integer' + _bounds(minimum, maximum))
  return int(value)


def positive_int(name, value):
  """Returns `value` as an int >= 1."""
  if not is_integer(value) or value < 1:
    fail(name, value, 'must be a positive integer')
  return int(value)


def non_negative_int(name, value):
  """Returns `value` as an int >= 0."""
  if not is_integer(value) or value < 0:
    fail(name, value, 'must be an integer >= 0')
  return int(value)


def number(name, value, low=None, high=None, low_open=False, high_open=False):
  """Returns `value` as a finite float inside the given interval.

  Args:
    name: the argument's name, for the message.
    value: the value to check.
    low, high: bounds; None for unbounded.
    low_open, high_open: whether the bound itself is excluded.
  """
  ok = is_number(value) and math.isfinite(value)
  if ok and low is not None:
    ok = value > low if low_open else value >= low
  if ok and high is not None:
    ok = value < high if high_open else value <= high
  if not ok:
    fail(name, value, 'must be a finite number' + _interval(
        low, high, low_open, high_open))
  return float(value)


def positive_number(name, value):
  """Returns `value` as a finite float > 0."""
  if not (is_number(value) and math.isfinite(value) and value > 0):
    fail(name, value, 'must be a positive number')
  return float(value)


def one_of(name, value, choices):
  """Returns `value` if it is one of `choices`."""
  if not isinstance(value, (str, bool, int, float, type(None))) or (
      value not in choices):
    fail(name, value, f'must be one of {tuple(choices)}')
  return value


def int_tuple(name, value, length):
  """An int or a sequence of `length` positive ints, as a tuple."""
  items = (value,) * length if is_integer(value) else value
  try:
    items = tuple(items)
  except TypeError:
    items = ()
  if len(items) != length or not all(is_integer(v) and v > 0 for v in items):
    fail(name, value, f'must be a positive int or {length} positive ints')
  return tuple(int(v) for v in items)


def fractions(name, value):
  """A sequence of numbers strictly inside (0, 1), as a tuple of floats."""
  if isinstance(value, (str, bytes)) or not hasattr(value, '__iter__'):
    fail(name, value, 'must be a tuple of fractions in (0, 1), e.g. (0.5,)')
  items = tuple(value)
  if not all(is_number(v) and 0 < v < 1 for v in items):
    fail(name, value, 'must hold fractions of training in (0, 1)')
  return tuple(float(v) for v in items)


def _bounds(minimum, maximum):
  if minimum is not None and maximum is not None:
    return f' in [{minimum}, {maximum}]'
  if minimum is not None:
    return f' >= {minimum}'
  if maximum is not None:
    return f' <= {maximum}'
  return ''


def _interval(low, high, low_open, high_open):
  if low is None and high is None:
    return ''
  if high is None:
    return f' {">" if low_open else ">="} {low}'
  if low is None:
    return f' {"<" if high_open else "<="} {high}'
  return (f' in {"(" if low_open else "["}{low}, {high}'
          f'{")" if high_open else "]"}')
