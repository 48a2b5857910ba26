"""`InputNormalization` lives in `normprop_tf.input_normalization` (core).

It is a `keras.ops` layer with no TensorFlow in it, imported by
`import normprop_tf` so that saved models holding it load; this module
keeps the older import path working.
"""

from normprop_tf.input_normalization import InputNormalization
from normprop_tf.input_normalization import MODES
from normprop_tf.input_normalization import with_input_normalization

__all__ = ['InputNormalization', 'MODES', 'with_input_normalization']
