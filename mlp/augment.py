"""On-the-fly augmentation of training batches, inside the tf.data pipeline.

Every random choice is a stateless function of (seed, batch number), so an augmented batch is
the same however the run got to it (resume stays exact).
"""

import tensorflow as tf

SIDE = 28


def make_augment(seed, shift=0, flip=False, erase=0.0):
    """A function (images [B, 784] float32, batch_number) -> augmented images, or None if nothing
    is switched on.

    shift: translate each image by up to `shift` pixels in each direction (zeros fill in).
    flip: mirror each image left-right with probability 1/2 (clothes are left-right symmetric
      enough; the labels do not change).
    erase: with this probability, zero a random rectangle of each image (random erasing, Zhong
      et al. 2017), of 2% to 25% of the area.
    """
    if not shift and not flip and not erase:
        return None

    def augment(images, batch_number):
        batch = tf.shape(images)[0]
        key = tf.stack([tf.cast(seed, tf.int64), tf.cast(batch_number, tf.int64)])

        def uniform(stream, shape, low=0.0, high=1.0):
            return tf.random.stateless_uniform(
                shape, tf.random.experimental.stateless_fold_in(key, stream), low, high)

        pictures = tf.reshape(images, [batch, SIDE, SIDE, 1])
        if shift:
            offsets = tf.round(uniform(1, [batch, 2], -shift - 0.5, shift + 0.5))
            ones, zeros = tf.ones([batch, 1]), tf.zeros([batch, 1])
            # Each row maps output (x, y) to input (x - dx, y - dy).
            transforms = tf.concat([ones, zeros, -offsets[:, :1], zeros, ones, -offsets[:, 1:],
                                    zeros, zeros], axis=1)
            pictures = tf.raw_ops.ImageProjectiveTransformV3(
                images=pictures, transforms=transforms, output_shape=[SIDE, SIDE],
                fill_value=0.0, interpolation="NEAREST", fill_mode="CONSTANT")
        if flip:
            mirrored = uniform(2, [batch, 1, 1, 1]) < 0.5
            pictures = tf.where(mirrored, tf.reverse(pictures, axis=[2]), pictures)
        if erase:
            area = uniform(3, [batch, 1]) * 0.23 + 0.02
            aspect = tf.exp(uniform(4, [batch, 1], -1.1, 1.1))  # log-uniform in [1/3, 3]
            height = tf.clip_by_value(tf.round(tf.sqrt(area * aspect) * SIDE), 1, SIDE)
            width = tf.clip_by_value(tf.round(tf.sqrt(area / aspect) * SIDE), 1, SIDE)
            top = tf.floor(uniform(5, [batch, 1]) * (SIDE - height + 1))
            left = tf.floor(uniform(6, [batch, 1]) * (SIDE - width + 1))
            chosen = uniform(7, [batch, 1]) < erase
            rows = tf.range(SIDE, dtype=tf.float32)[None, :]
            inside_rows = (rows >= top) & (rows < top + height) & chosen  # [B, 28]
            inside_cols = (rows >= left) & (rows < left + width)
            hole = inside_rows[:, :, None] & inside_cols[:, None, :]
            pictures = tf.where(hole[..., None], 0.0, pictures)
        return tf.reshape(pictures, [batch, SIDE * SIDE])

    return augment
