"""normprop_tf: Normalization Propagation (Arpit et al., ICML 2016) for Keras 3.

The core modules (`activations`, `callbacks`, `diagnostics`, `export`,
`functional`, `initializers`, `input_normalization`, `layers`, `models`,
`pooling`, `tags`, `wrappers`) import Keras and NumPy only, never TensorFlow, so they
run under any Keras backend. The TensorFlow-only parts (`normprop_tf.data`,
training) are separate modules and are not imported here.
"""

# pylint: disable=g-import-not-at-top
from normprop_tf.utils import console as _console

# Keras imports TensorFlow here; under our own commands (only), its start-up
# banner is filtered out (normprop_tf.utils.console says why and how).
with _console.started_by_entry_point():
  from normprop_tf import activations
  from normprop_tf import callbacks
  from normprop_tf import diagnostics
  from normprop_tf import export
  from normprop_tf import initializers
  from normprop_tf import input_normalization
  from normprop_tf import layers
  from normprop_tf import models
  from normprop_tf import wrappers
  from normprop_tf.input_normalization import InputNormalization
  from normprop_tf.layers import NormPropConv2D
  from normprop_tf.layers import NormPropDense
  from normprop_tf.layers import WeightNormConv2D
  from normprop_tf.layers import WeightNormDense
  from normprop_tf.models import nin
  from normprop_tf.wrappers import NormPropagation
  from normprop_tf.wrappers import WeightNormalization

__version__ = '0.2.0'
