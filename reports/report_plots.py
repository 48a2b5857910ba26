"""Deterministic PNG plots for the report (matplotlib Agg).

The same data gives the same PNG bytes: matplotlib's built-in defaults (no
user matplotlibrc or style), a fixed size and dpi, the bundled DejaVu font,
and no 'Software' or date metadata in the file.
"""

import dataclasses

import matplotlib

matplotlib.use('Agg')
# pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import pyplot as plt
from matplotlib import ticker

DPI = 100
_RC = {
    'font.family': 'DejaVu Sans',
    'font.size': 8,
    'axes.titlesize': 9,
    'legend.fontsize': 7,
    'figure.dpi': DPI,
    'savefig.dpi': DPI,
    'axes.grid': True,
    'grid.alpha': 0.3,
}
COLORS = {'normprop': '#1f77b4', 'bn': '#ff7f0e', 'wn': '#2ca02c',
          'plain': '#d62728', 'standardize': '#1f77b4',
          'minibatch': '#9467bd', 'batchnorm': '#ff7f0e',
          'weightnorm': '#2ca02c', 'none': '#d62728'}


@dataclasses.dataclass
class Line:
  """One curve; `lo`/`hi` (optional) shade its spread."""
  label: str
  xs: list
  ys: list
  lo: list = None
  hi: list = None
  color: str = None
  style: str = '-'
  marker: str = 'o'


@dataclasses.dataclass
class Panel:
  title: str
  ylabel: str
  lines: list
  xlabel: str = None
  # (x, label, color, height as a fraction of the axes): an 'x' (diverged).
  markers_x: list = None
  legend: bool = True
  # (x, label): a dotted vertical line, e.g. a learning-rate decay.
  vlines: list = None


def line_panels(path, panels, xlabel, ncols=2, panel_size=(4.0, 3.0),
                logx=False, logy=False, sharey=False, sharex=False):
  """Writes a grid of line plots with legends to `path` (PNG)."""
  nrows = -(-len(panels) // ncols)
  with plt.style.context('default'), matplotlib.rc_context(rc=_RC):
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
        squeeze=False, sharey=sharey, sharex=sharex)
    for i, ax in enumerate(axes.flat):
      if i >= len(panels):
        ax.set_visible(False)
        continue
      _draw_panel(ax, panels[i], xlabel, logx, logy)
    fig.tight_layout()
    _save(fig, path)


def _draw_panel(ax, panel, xlabel, logx, logy):
  for line in panel.lines:
    if len(line.xs) == 1 and line.lo is not None:
      # A lone point (a split evaluated once): its spread as an error bar.
      ax.errorbar(line.xs, line.ys, yerr=[[line.ys[0] - line.lo[0]],
                                          [line.hi[0] - line.ys[0]]],
                  fmt='o', color=line.color, markersize=4, capsize=3,
                  label=line.label)
      continue
    ax.plot(line.xs, line.ys, line.style, color=line.color,
            marker=line.marker, markersize=3, linewidth=1.2,
            label=line.label)
    if line.lo is not None and any(
        lo != hi for lo, hi in zip(line.lo, line.hi)):
      ax.fill_between(line.xs, line.lo, line.hi, color=line.color,
                      alpha=0.2, linewidth=0)
  for x, label in panel.vlines or []:
    ax.axvline(x, color='0.5', linestyle=':', linewidth=1.0, label=label)
  for x, label, color, height in panel.markers_x or []:
    ax.plot([x], [height], 'x', color=color, markersize=8, mew=2,
            transform=ax.get_xaxis_transform(), label=label)
  if logx:
    ax.set_xscale('log')
    ticks = sorted({x for line in panel.lines for x in line.xs} |
                   {m[0] for m in panel.markers_x or []})
    ax.set_xticks(ticks)
    ax.set_xticklabels([f'{x:g}' for x in ticks])
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  if logy:
    ax.set_yscale('log')
  ax.set_title(panel.title)
  ax.set_xlabel(panel.xlabel or xlabel)
  ax.set_ylabel(panel.ylabel)
  handles, labels = ax.get_legend_handles_labels()
  if handles and panel.legend:
    unique = dict(zip(labels, handles))  # One entry per label.
    ax.legend(list(unique.values()), list(unique.keys()))


def bars(path, groups, series, ylabel, title, figsize=(6.0, 3.2)):
  """Grouped bar chart: `series` is [(label, color, [value per group])]."""
  with plt.style.context('default'), matplotlib.rc_context(rc=_RC):
    fig, ax = plt.subplots(figsize=figsize)
    width = 0.8 / max(1, len(series))
    for i, (label, color, values) in enumerate(series):
      xs = [g + (i - (len(series) - 1) / 2) * width
            for g in range(len(groups))]
      heights = [v if v is not None else 0.0 for v in values]
      ax.bar(xs, heights, width=width * 0.95, color=color, label=label)
      for x, v in zip(xs, values):
        ax.annotate('n/a' if v is None else f'{v:.1f}', (x, v or 0.0),
                    ha='center', va='bottom', fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path):
  fig.savefig(path, format='png', dpi=DPI, metadata={'Software': None})
  plt.close(fig)
