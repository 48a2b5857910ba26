"""Hidden-layer statistics on a fixed probe batch: the paper's Figure 2 view.

Every `stats_every_steps` steps the training loop runs the model in inference
mode on the same probe batch (the first images of the validation split) and
records, for every hidden layer `convI`:

- the mean and std of `preactivation`, `normalized` and `output`
  (per-channel moments over batch and space, then averaged over channels):
  scalars `hidden/convI/<part>/mean` and `hidden/convI/<part>/std`, plus a
  histogram of a strided sample of the values, `hidden/convI/<part>`;
- how far the statistics the network *assumes at inference* are from the
  true statistics of the probe data, per channel, averaged over channels:
  `hidden/convI/gap_mean` = mean_c |E z_c - 0| and
  `hidden/convI/gap_std` = mean_c |Std z_c - 1|, where z is the quantity the
  method treats as standardized:
    - NormProp: z = W_i . x / ||W_i|| (its parametric estimate is mean 0,
      std 1). `output_gap_mean`/`output_gap_std` do the same for the layer
      output, which NormProp's post-normalization assumes is (0, 1).
    - BatchNorm: z = (x - moving_mean) / sqrt(moving_variance + eps), x the
      conv output, i.e. x standardized with the moving averages BN uses at
      validation. So the gap is the moving-average error in units of the
      moving std: |true_mean - moving_mean| / sqrt(moving_var + eps), and
      |true_std / sqrt(moving_var + eps) - 1|.
    - weight norm and plain networks make no estimate: no gap.
  Histograms `hidden/convI/normalized/channel_mean` and `.../channel_std`
  show the per-channel values behind the gap.

`weight_histograms` writes the per-unit kernel norms ||W_i|| of every conv
(`weights/<layer>/kernel_norm`) and the learned scales (gamma, or g).

The statistics are computed inside one `tf.function`; only per-channel
vectors and a few thousand sampled values leave it.
"""

import keras
import numpy as np
import tensorflow as tf

from normprop_tf import models

PARTS = ('preactivation', 'normalized', 'output')


class HiddenStats:
  """Computes and writes hidden-layer statistics on a fixed probe batch.

  Args:
    model: a model built by `normprop_tf.models.nin`.
    probe_images: float32 [N, H, W, C], the preprocessed probe batch.
    histogram_values: at most this many values per histogram.
  """

  def __init__(self, model, probe_images, histogram_values=4096):
    self.model = model
    self.kind = models.norm_kind(model)
    self.probe = models.probe_model(model)
    present = {layer.name for layer in model.layers}
    self.layers = [n for n in models.hidden_layer_names() if n in present]
    self.images = tf.convert_to_tensor(probe_images, tf.float32)
    self.histogram_values = histogram_values
    self._compute = tf.function(self._moments, autograph=False)

  def _moments(self, images):
    outputs = self.probe(images, training=False)
    result = {}
    for name in self.layers:
      for part in PARTS:
        x = tf.cast(outputs[f'{name}/{part}'], tf.float32)
        mean, var = tf.nn.moments(x, axes=list(range(x.shape.rank - 1)))
        result[f'{name}/{part}/channel_mean'] = mean
        result[f'{name}/{part}/channel_std'] = tf.sqrt(var)
        flat = tf.reshape(x, [-1])
        size = int(np.prod(x.shape[1:])) * int(images.shape[0])
        stride = max(1, -(-size // self.histogram_values))  # Ceiling.
        result[f'{name}/{part}/sample'] = flat[::stride]
    return result

  def _estimate_gaps(self, stats):
    """{metric: value} of the estimate-vs-truth gaps (see module doc)."""
    gaps = {}
    for name in self.layers:
      mean = stats[f'{name}/normalized/channel_mean']
      std = stats[f'{name}/normalized/channel_std']
      if self.kind == 'batchnorm':
        bn = self.model.get_layer(f'{name}_bn')
        scale = np.sqrt(keras.ops.convert_to_numpy(bn.moving_variance) +
                        bn.epsilon)
        moving_mean = keras.ops.convert_to_numpy(bn.moving_mean)
        z_mean, z_std = (mean - moving_mean) / scale, std / scale
      elif self.kind == 'normprop':
        z_mean, z_std = mean, std
        out_mean = stats[f'{name}/output/channel_mean']
        out_std = stats[f'{name}/output/channel_std']
        gaps[f'hidden/{name}/output_gap_mean'] = np.mean(np.abs(out_mean))
        gaps[f'hidden/{name}/output_gap_std'] = np.mean(np.abs(out_std - 1))
      else:
        continue
      gaps[f'hidden/{name}/gap_mean'] = np.mean(np.abs(z_mean))
      gaps[f'hidden/{name}/gap_std'] = np.mean(np.abs(z_std - 1))
    return gaps

  def compute(self):
    """Returns ({scalar tag: float}, {histogram tag: np.ndarray})."""
    stats = {k: v.numpy() for k, v in self._compute(self.images).items()}
    scalars, histograms = {}, {}
    for name in self.layers:
      for part in PARTS:
        scalars[f'hidden/{name}/{part}/mean'] = float(
            np.mean(stats[f'{name}/{part}/channel_mean']))
        scalars[f'hidden/{name}/{part}/std'] = float(
            np.mean(stats[f'{name}/{part}/channel_std']))
        histograms[f'hidden/{name}/{part}'] = stats[f'{name}/{part}/sample']
      for moment in ('channel_mean', 'channel_std'):
        histograms[f'hidden/{name}/normalized/{moment}'] = stats[
            f'{name}/normalized/{moment}']
    scalars.update({k: float(v) for k, v in self._estimate_gaps(
        stats).items()})
    return scalars, histograms


def weight_histograms(model):
  """{tag: values}: per-unit kernel norms and learned scales per layer."""
  result = {}
  for layer in model.layers:
    kernel = getattr(layer, 'kernel', None)
    if kernel is None or len(kernel.shape) < 2:
      continue
    w = keras.ops.convert_to_numpy(kernel).astype(np.float64)
    result[f'weights/{layer.name}/kernel_norm'] = np.sqrt(
        np.sum(np.square(w.reshape(-1, w.shape[-1])), axis=0))
    for scale_name in ('gamma', 'g'):
      scale = getattr(layer, scale_name, None)
      if scale is not None and hasattr(scale, 'shape'):
        result[f'weights/{layer.name}/{scale_name}'] = (
            keras.ops.convert_to_numpy(scale))
  for layer in model.layers:  # BatchNormalization's gamma.
    if isinstance(layer, keras.layers.BatchNormalization) and layer.scale:
      result[f'weights/{layer.name}/gamma'] = keras.ops.convert_to_numpy(
          layer.gamma)
  return result


def write_histograms(writer, step, histograms):
  with writer.as_default(step=step):
    for tag, values in histograms.items():
      tf.summary.histogram(tag, values)
