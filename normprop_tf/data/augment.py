"""The paper's "+aug": zero-pad 4 pixels, random 32x32 crop, random flip.

Stateless and seeded: the same (images, seed) always gives the same output,
eagerly or inside `tf.data.Dataset.map`. The work is vectorized over the
batch; each image gets its own crop offset and flip.

- Crop offsets come from `tf.random.stateless_uniform`; the crop is a
  gather, so pixels are copied exactly. (`tf.image.stateless_random_crop`
  would give every image of a batch the same offset.)
- The flip is `tf.image.stateless_random_flip_left_right`, which draws one
  coin per image of a 4-D batch.

Padding is with zeros of the input: after 'standardize' or 'zca' that is the
training-set mean (the pylearn2/NIN convention); on raw or /255 pixels it is
black.
"""

import tensorflow as tf

PAD = 4


def augment_batch(images, seed, pad=PAD):
  """Pads, randomly crops back to H x W, and randomly flips each image.

  Args:
    images: [B, H, W, C] tensor of any dtype, H and W static.
    seed: int tensor of shape [2] (a stateless seed).
    pad: pixels of zero padding on every side; offsets are in [0, 2*pad].

  Returns:
    A tensor like `images`.
  """
  images = tf.convert_to_tensor(images)
  if images.shape.rank != 4:
    raise ValueError('augment_batch expects [B, H, W, C] images. '
                     f'Received: shape={images.shape}')
  height, width = images.shape[1], images.shape[2]
  batch = tf.shape(images)[0]
  seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  offsets = tf.random.stateless_uniform(
      [batch, 2], seed=crop_seed, minval=0, maxval=2 * pad + 1,
      dtype=tf.int32)
  rows = offsets[:, :1] + tf.range(height)[None, :]
  cols = offsets[:, 1:] + tf.range(width)[None, :]
  out = tf.gather(padded, rows, axis=1, batch_dims=1)
  out = tf.gather(out, cols, axis=2, batch_dims=1)
  return tf.image.stateless_random_flip_left_right(out, seed=flip_seed)
