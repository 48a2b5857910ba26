"""What machine a record or benchmark was made on.

Numbers from different machines are not comparable (oneDNN picks different
kernels on an AVX-512/AMX part than on an AVX2 one, for instance), so every
run record and every benchmark names its CPU, its cores and memory, the
accelerators the backend sees and the library versions.

The CPU's family/model/stepping and its vector extensions are recorded too:
virtual machines often report only "AMD EPYC" as the model name.
"""

import os
import platform
import re
import socket
import subprocess

_VECTOR_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'amx_tile',
                 'amx_bf16', 'fma')


def _cpuinfo():
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      return f.read()
  except OSError:
    return ''


def cpu_description():
  """{'cpu', 'cpu_family', 'cpu_model', 'cpu_flags'} of this host's CPU."""
  text = _cpuinfo()
  field = lambda key: (re.findall(rf'^{key}\s*:\s*(.*)$', text, re.M) or
                       [None])[0]
  flags = set((field('flags') or '').split())
  return {
      'cpu': field('model name') or platform.processor() or platform.machine(),
      'cpu_family': field('cpu family'),
      'cpu_model': field('model'),
      'cpu_flags': [f for f in _VECTOR_FLAGS if f in flags],
  }


def memory_gb():
  """Total RAM in GB, or None when /proc/meminfo is absent."""
  try:
    with open('/proc/meminfo', encoding='utf-8') as f:
      return round(int(re.search(r'MemTotal:\s*(\d+)', f.read())[1]) / 2**20,
                   1)
  except (OSError, TypeError):
    return None


def machine_info(devices=None, **versions):
  """The host, CPU, memory, devices and versions, as a JSON-able dict.

  Args:
    devices: {device type: count} the backend sees, e.g. {'CPU': 1}.
    **versions: library versions to record, e.g. tensorflow='2.21.0'.
  """
  import keras  # pylint: disable=g-import-not-at-top
  info = {
      'hostname': socket.gethostname(),
      'platform': platform.platform(),
      **cpu_description(),
      'cpu_count': os.cpu_count(),
      'memory_gb': memory_gb(),
      'logical_devices': dict(devices or {}),
      'python': platform.python_version(),
      'keras': keras.__version__,
      'keras_backend': keras.backend.backend(),
  }
  info.update(versions)
  return info


def one_line(info):
  """'AMD EPYC (family 25 model 17, avx512f), 2 cores, 24 GB RAM'."""
  detail = [f'family {info["cpu_family"]} model {info["cpu_model"]}'
            ] if info.get('cpu_family') else []
  detail += [', '.join(info.get('cpu_flags') or [])] if info.get(
      'cpu_flags') else []
  cpu = info.get('cpu', 'unknown CPU') + (f' ({"; ".join(detail)})'
                                          if detail else '')
  parts = [cpu, f'{info.get("cpu_count")} cores']
  if info.get('memory_gb'):
    parts.append(f'{info["memory_gb"]:.0f} GB RAM')
  accelerators = {k: v for k, v in (info.get('logical_devices') or {}).items()
                  if k != 'CPU'}
  parts.append(', '.join(f'{v} {k}' for k, v in accelerators.items()) or
               'no accelerator')
  return ', '.join(parts)


def code_version(path=None):
  """`git describe --always --dirty` of the checkout holding `path`.

  Records carry it, so a report can say which code made each record. None
  outside a git checkout (e.g. an installed wheel).
  """
  path = path or os.path.dirname(os.path.abspath(__file__))
  try:
    out = subprocess.run(['git', 'describe', '--always', '--dirty',
                          '--abbrev=12'], cwd=path, capture_output=True,
                         text=True, timeout=10, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() or None
