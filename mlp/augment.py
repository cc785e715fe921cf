"""On-the-fly augmentation of training batches, inside the tf.data pipeline.

Every random choice is a stateless function of (seed, batch number), so an augmented batch is
the same however the run got to it (resume stays exact).
"""

import tensorflow as tf

from mlp.config import NUM_CLASSES, SIDE


def make_augment(seed, shift=0, flip=False, erase=0.0):
    """A function (images [B, 784] float32, batch_number) -> augmented images, or None if nothing
    is switched on.

    shift: translate each image by up to `shift` pixels in each direction (zeros fill in).
    flip: mirror each image left-right with probability 1/2 (clothes are left-right symmetric
      enough; the labels do not change). Applied after the shift.
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

        coordinates = tf.range(SIDE, dtype=tf.float32)[None, :]  # [1, 28]
        if shift or flip:
            # Shift and flip only move pixels: one gather per image, from the image with a zero
            # appended (index SIDE*SIDE) for the pixels that come from outside it.
            source_rows = tf.tile(coordinates, [batch, 1])
            source_cols = tf.tile(coordinates, [batch, 1])
            if flip:
                mirrored = uniform(2, [batch, 1]) < 0.5
                source_cols = tf.where(mirrored, SIDE - 1 - source_cols, source_cols)
            if shift:
                # Output pixel (row, col) shows input pixel (row - dy, col - dx).
                offsets = tf.round(uniform(1, [batch, 2], -shift - 0.5, shift + 0.5))
                source_cols -= offsets[:, :1]
                source_rows -= offsets[:, 1:]
            inside = ((source_rows >= 0) & (source_rows < SIDE))[:, :, None] & \
                     ((source_cols >= 0) & (source_cols < SIDE))[:, None, :]
            flat_index = tf.cast(source_rows[:, :, None] * SIDE + source_cols[:, None, :], tf.int32)
            flat_index = tf.where(inside, flat_index, SIDE * SIDE)
            padded = tf.concat([images, tf.zeros([batch, 1], images.dtype)], axis=1)
            images = tf.gather(padded, tf.reshape(flat_index, [batch, SIDE * SIDE]), batch_dims=1)
        if erase:
            area = uniform(3, [batch, 1]) * 0.23 + 0.02
            aspect = tf.exp(uniform(4, [batch, 1], -1.1, 1.1))  # log-uniform in [1/3, 3]
            height = tf.clip_by_value(tf.round(tf.sqrt(area * aspect) * SIDE), 1, SIDE)
            width = tf.clip_by_value(tf.round(tf.sqrt(area / aspect) * SIDE), 1, SIDE)
            top = tf.floor(uniform(5, [batch, 1]) * (SIDE - height + 1))
            left = tf.floor(uniform(6, [batch, 1]) * (SIDE - width + 1))
            chosen = uniform(7, [batch, 1]) < erase
            inside_rows = (coordinates >= top) & (coordinates < top + height) & chosen  # [B, 28]
            inside_cols = (coordinates >= left) & (coordinates < left + width)
            hole = inside_rows[:, :, None] & inside_cols[:, None, :]
            images = tf.where(tf.reshape(hole, [batch, SIDE * SIDE]), 0.0, images)
        return images

    return augment


# The mixing's random streams, apart from make_augment's (1 to 7).
MIX_STREAMS = 100


def make_mix(seed, mixup=0.0, cutmix=0.0):
    """A function (images [B, 784], int labels [B], batch_number) -> (mixed images, targets
    [B, NUM_CLASSES] float32, each row a distribution), or None if both are 0.

    Each image is mixed with a partner, the image at its place in a random permutation of the
    batch, by one weight lambda per batch drawn from Beta(alpha, alpha):
    mixup (Zhang et al., 2018): lambda * image + (1 - lambda) * partner.
    cutmix (Yun et al., 2019): one rectangle of side sqrt(1 - lambda) of the image's, centred
      anywhere and clipped to the image, comes from the partner.
    The targets are the one-hot labels mixed by the same weights: by the share of pixels each
    image keeps, for cutmix. With both on, each batch takes one of the two with probability 1/2.
    """
    if not mixup and not cutmix:
        return None

    def mix(images, labels, batch_number):
        batch = tf.shape(images)[0]
        key = tf.stack([tf.cast(seed, tf.int64), tf.cast(batch_number, tf.int64)])

        def stream(k):
            return tf.random.experimental.stateless_fold_in(key, MIX_STREAMS + k)

        partner = tf.random.experimental.stateless_shuffle(tf.range(batch), stream(0))
        partner_images = tf.gather(images, partner)

        def beta(alpha):
            first = tf.random.stateless_gamma([], stream(1), alpha)
            return tf.math.divide_no_nan(first, first + tf.random.stateless_gamma([], stream(2),
                                                                                  alpha))

        def mixed():
            weight = beta(mixup)
            return weight * images + (1.0 - weight) * partner_images, weight

        def cut():
            side = tf.round(SIDE * tf.sqrt(1.0 - beta(cutmix)))
            centre = tf.random.stateless_uniform([2], stream(3), 0.0, SIDE)
            start = tf.floor(centre - side / 2)
            low = tf.clip_by_value(start, 0.0, SIDE)
            high = tf.clip_by_value(start + side, 0.0, SIDE)
            coordinates = tf.range(SIDE, dtype=tf.float32)
            rows = (coordinates >= low[0]) & (coordinates < high[0])
            columns = (coordinates >= low[1]) & (coordinates < high[1])
            hole = tf.reshape(rows[:, None] & columns[None, :], [1, SIDE * SIDE])
            kept = 1.0 - tf.reduce_mean(tf.cast(hole, tf.float32))
            return tf.where(hole, partner_images, images), kept

        if mixup and cutmix:
            use_cutmix = tf.random.stateless_uniform([], stream(4)) < 0.5
            images, weight = tf.cond(use_cutmix, cut, mixed)
        else:
            images, weight = cut() if cutmix else mixed()
        one_hot = tf.one_hot(labels, NUM_CLASSES)
        return images, weight * one_hot + (1.0 - weight) * tf.gather(one_hot, partner)

    return mix


def mirror(images):
    """Flattened 28x28 images [B, 784], each mirrored left-right."""
    return tf.reshape(tf.reverse(tf.reshape(images, [-1, SIDE, SIDE]), axis=[2]), [-1, SIDE * SIDE])


def shift(images, rows, columns):
    """Flattened 28x28 images [B, 784], each moved down by `rows` and right by `columns` pixels
    (negative: up, left); zeros fill the uncovered edge and what leaves the image is dropped."""
    square = tf.reshape(images, [-1, SIDE, SIDE])
    padded = tf.pad(square, [[0, 0], [max(rows, 0), max(-rows, 0)],
                             [max(columns, 0), max(-columns, 0)]])
    top, left = max(-rows, 0), max(-columns, 0)
    return tf.reshape(padded[:, top:top + SIDE, left:left + SIDE], [-1, SIDE * SIDE])


def evaluation_views(images, flip=False, shifts=0):
    """The views evaluation averages over, of flattened images [B, 784]: the images, their
    mirrors if `flip`, and each of those shifted by 1 to `shifts` pixels down, up, right and
    left."""
    base = [images, mirror(images)] if flip else [images]
    return base + [shift(view, rows, columns)
                   for distance in range(1, shifts + 1)
                   for rows, columns in ((distance, 0), (-distance, 0), (0, distance),
                                         (0, -distance))
                   for view in base]
