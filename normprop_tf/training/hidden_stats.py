"""Hidden-layer statistics on a fixed probe batch, inside the training loop.

Every `hidden_stats.every_steps` steps the loop runs the model in inference
mode on the same probe batch (the first images of the validation split) and
records what `normprop_tf.diagnostics` computes: per-unit moments
(`stats/<unit>/<part>/{mean,std}`), the estimate gaps of NormProp and BN
(`ics/<unit>/gap_mean`, `gap_std`, NormProp's `output_gap_*`), their
averages over layers (`ics/mean_over_layers/*`), histograms, and the kernel
norms and learned scales (`weights/<unit>/...`). docs/tensorboard.md says
what each tag means.

The moments are computed inside one `tf.function`; only per-channel vectors
and a few thousand sampled values leave it.
"""

import tensorflow as tf

from normprop_tf import diagnostics


class HiddenStats:
  """Computes the hidden-layer statistics of a model on a fixed batch.

  Args:
    model: a Keras model with NormProp, weight-norm or BN layers (e.g. one
      built by `normprop_tf.models.nin`).
    probe_images: float32 [N, H, W, C], the preprocessed probe batch.
    histogram_values: at most this many values per histogram.
  """

  def __init__(self, model, probe_images, histogram_values=4096):
    self.model = model
    self.probe = diagnostics.probe_model(model)
    self.unit_names = list(self.probe.unit_kinds)
    self.images = tf.convert_to_tensor(probe_images, tf.float32)
    self._compute = tf.function(
        lambda images: diagnostics.statistics(
            self.probe(images, training=False), histogram_values),
        autograph=False)

  def compute(self):
    """({scalar tag: float}, {histogram tag: np.ndarray}) at this step."""
    scalars, histograms = diagnostics.summarize(
        self._compute(self.images), self.probe.unit_kinds)
    histograms.update(diagnostics.weight_statistics(self.model))
    return scalars, histograms
