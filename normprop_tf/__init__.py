"""normprop_tf: Normalization Propagation (Arpit et al., ICML 2016) for Keras 3.

The core modules (`activations`, `export`, `functional`, `initializers`,
`input_normalization`, `layers`, `models`, `pooling`) import Keras and NumPy
only, never TensorFlow, so they run under any Keras backend. The TensorFlow-only parts (`normprop_tf.data`, training)
are separate modules and are not imported here.
"""

from normprop_tf import activations
from normprop_tf import export
from normprop_tf import initializers
from normprop_tf import input_normalization
from normprop_tf import layers
from normprop_tf import models
from normprop_tf.input_normalization import InputNormalization
from normprop_tf.layers import NormPropConv2D
from normprop_tf.layers import NormPropDense
from normprop_tf.layers import WeightNormConv2D
from normprop_tf.layers import WeightNormDense
from normprop_tf.models import nin

__version__ = '0.2.0'
