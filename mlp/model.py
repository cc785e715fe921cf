"""The models: the MLP, hidden blocks of Dense+ReLU -> [BatchNorm] -> [Dropout], then a Dense
logits layer; and the CNN that teaches it in distillation (ConvNet: convolution blocks, then an
MLP). `from_config` makes the one a Config describes.

The interface the rest of the library relies on (the trainer, the evaluator, the L2 penalty,
checkpoints and summaries), and so what any other model given to them must provide:

  model(images, training, step=0, replica=None) -> logits
      images: [batch, 784] float32 in [0, 1]. training: a Python bool (batch statistics and
      dropout on). step: the optimizer step, an int scalar tensor; with `replica` (the replica's
      index in sync, under a strategy of several replicas) it seeds the dropout masks, so a
      mask is a function of (seed, step, replica). Returns float32 logits [batch, 10] whatever
      the compute dtype. Training mode may update non-trainable state (moving statistics).
  model.kernels            the variables the L2 penalty covers (dense and convolution kernels;
                           no biases or batch-norm parameters).
  model.trainable_variables, model.variables
                           what the optimizer updates; what checkpoints, best weights, weight
                           averages and the weights digest hold (tf.Module's, fixed order).
  model.histogram_variables()
                           {tag: variable} written as TensorBoard histograms each epoch.
"""

import numpy as np
import tensorflow as tf

from mlp import fused
from mlp.config import MAX_CONV_BLOCKS, SIDE
from mlp.layers import BatchNorm, Conv2D, Dense, Dropout, FixedLinear

# The convolutions' initial kernels are drawn from seeds (seed, CONV_SEEDS + block), apart from
# the dense layers' (seed, layer).
CONV_SEEDS = 1000


def from_config(config, compute_dtype=tf.float32, input_transform=None, fused_ops=None):
    """The model `config` describes: a ConvNet with --conv-channels, else an MLP (see
    MLP.from_config)."""
    if not config.conv_channels:
        return MLP.from_config(config, compute_dtype, input_transform, fused_ops)
    return ConvNet(config.conv_channels, hidden_sizes=config.hidden_sizes,
                   batch_norm=config.batch_norm, dropout=config.dropout,
                   dropout_layers=config.dropout_layers, initializer=config.initializer,
                   seed=config.seed, compute_dtype=compute_dtype,
                   sync_batch_norm=config.sync_batch_norm, fused_ops=fused_ops)


class MLP(tf.Module):
    """A multi-layer perceptron for flattened 28x28 images.

    Args:
      hidden_sizes: widths of the hidden layers, input side first.
      batch_norm: add batch normalization after each hidden layer's ReLU.
      dropout: dropout rate after the first `dropout_layers` hidden blocks.
      initializer: kernel initializer of the hidden (ReLU) layers; the logits layer uses
        glorot_uniform, the Keras default for a layer without ReLU.
      seed: fixes the initial weights and, with the step, every dropout mask.
      compute_dtype: dtype of the matrix products (float32, float16 or bfloat16); variables are
        float32 whatever it is, and the logits come back as float32.
      sync_batch_norm: batch statistics over the global batch under a strategy of several
        replicas (see BatchNorm).
      input_transform: None, or a (kernel [input_size, input_size], bias [input_size]) pair
        applied to the images before the first hidden layer and never trained (ZCA whitening,
        see mlp/whitening.py).
      fused_ops: None (TensorFlow's ops), or the ops module of mlp/fused.py: then in training
        each hidden layer's batch norm and dropout run as one fused kernel (a synchronized batch
        norm stays TensorFlow's, with its all-reduces; its dropout is fused).
    """

    def __init__(self, hidden_sizes=(512, 256, 50), batch_norm=True, dropout=0.2,
                 dropout_layers=2, initializer="he_normal", seed=0, compute_dtype=tf.float32,
                 input_size=784, num_classes=10, sync_batch_norm=False, input_transform=None,
                 fused_ops=None, name=None):
        super().__init__(name=name)
        self.fused_ops = fused_ops
        self.input_transform = (None if input_transform is None else
                                FixedLinear(*input_transform, name="input_transform"))
        self.seed = int(seed)
        self.compute_dtype = tf.as_dtype(compute_dtype)
        sizes = [input_size, *hidden_sizes]
        self.hidden = []
        self.norms = []
        self.dropouts = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.hidden.append(Dense(fan_in, fan_out, "relu", initializer, seed=(self.seed, i),
                                     name=f"dense_{i}"))
            self.norms.append(BatchNorm(fan_out, synchronized=sync_batch_norm,
                                        name=f"batch_norm_{i}") if batch_norm else None)
            use_dropout = dropout > 0 and i < dropout_layers
            self.dropouts.append(Dropout(dropout, name=f"dropout_{i}") if use_dropout else None)
        self.logits_layer = Dense(sizes[-1], num_classes, None, "glorot_uniform",
                                  seed=(self.seed, len(hidden_sizes)), name="logits")

    @classmethod
    def from_config(cls, config, compute_dtype=tf.float32, input_transform=None,
                    fused_ops=None):
        """The model `config` describes. With --whitening and no `input_transform` given, the
        transform starts as the identity: a placeholder of the right shape, for timing or for
        a checkpoint to fill."""
        if config.whitening == "none":
            input_transform = None
        elif input_transform is None:
            input_transform = (np.eye(784, dtype=np.float32), np.zeros(784, np.float32))
        return cls(hidden_sizes=config.hidden_sizes, batch_norm=config.batch_norm,
                   dropout=config.dropout, dropout_layers=config.dropout_layers,
                   initializer=config.initializer, seed=config.seed, compute_dtype=compute_dtype,
                   sync_batch_norm=config.sync_batch_norm, input_transform=input_transform,
                   fused_ops=fused_ops)

    @property
    def dense_layers(self):
        return [*self.hidden, self.logits_layer]

    @property
    def kernels(self):
        """The dense kernels: what L2 regularizes (not biases, not batch-norm parameters)."""
        return [layer.kernel for layer in self.dense_layers]

    def histogram_variables(self):
        return {f"weights/{layer.name}/{part}": getattr(layer, part)
                for layer in self.dense_layers for part in ("kernel", "bias")}

    def __call__(self, images, training, step=0, replica=None):
        """Logits for a batch of flattened images (see the module's docstring)."""
        x = tf.cast(images, self.compute_dtype)
        if self.input_transform is not None:
            x = self.input_transform(x)
        step_seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        if replica is not None:
            step_seed = tf.random.experimental.stateless_fold_in(step_seed, replica)
        for i, (dense, norm, dropout) in enumerate(zip(self.hidden, self.norms, self.dropouts)):
            seed = tf.random.experimental.stateless_fold_in(step_seed, i)
            x = dense(x, training, seed)
            if training and self.fused_ops is not None:
                x = self._fused_block(x, norm, dropout, seed)
                continue
            if norm is not None:
                x = norm(x, training)
            if dropout is not None:
                x = dropout(x, training, seed)
        seed = tf.random.experimental.stateless_fold_in(step_seed, len(self.hidden))
        return tf.cast(self.logits_layer(x, training, seed), tf.float32)

    def _fused_block(self, x, norm, dropout, seed):
        rate = dropout.rate if dropout is not None else 0.0
        if norm is not None and not norm.synchronized:
            return fused.batch_norm_dropout(self.fused_ops, x, norm, rate, seed)
        if norm is not None:
            x = norm(x, training=True)
        return fused.dropout(self.fused_ops, x, rate, seed) if rate else x


class ConvNet(tf.Module):
    """A small CNN for 28x28 images, the teacher of distillation (experiments.teacher): blocks
    of a 3x3 convolution with ReLU -> [BatchNorm over its channels] -> 2x2 max pooling, then an
    MLP on the flattened features (its hidden blocks and logits, as MLP). The same interface as
    the MLP; `kernels` holds the convolutions' kernels too, so L2 covers them. Each block halves
    the image's side (28, 14, 7, 3, 1): MAX_CONV_BLOCKS at most.

    Args:
      conv_channels: the blocks' output channels, input side first.
      the others: the MLP head's (see MLP); the convolutions use `initializer` and `batch_norm`
        too.
    """

    def __init__(self, conv_channels=(32, 64), hidden_sizes=(256,), batch_norm=True, dropout=0.2,
                 dropout_layers=2, initializer="he_normal", seed=0, compute_dtype=tf.float32,
                 sync_batch_norm=False, fused_ops=None, name=None):
        super().__init__(name=name)
        if not 1 <= len(conv_channels) <= MAX_CONV_BLOCKS:
            raise ValueError(f"a ConvNet takes 1 to {MAX_CONV_BLOCKS} convolution blocks, got "
                             f"{conv_channels}")
        self.compute_dtype = tf.as_dtype(compute_dtype)
        channels = [1, *conv_channels]
        self.convolutions, self.conv_norms = [], []
        for i, (fan_in, fan_out) in enumerate(zip(channels[:-1], channels[1:])):
            self.convolutions.append(Conv2D(fan_in, fan_out, initializer=initializer,
                                            seed=(int(seed), CONV_SEEDS + i), name=f"conv_{i}"))
            self.conv_norms.append(BatchNorm(fan_out, synchronized=sync_batch_norm,
                                             name=f"conv_batch_norm_{i}") if batch_norm else None)
        side = SIDE // 2 ** len(conv_channels)
        self.head = MLP(hidden_sizes, batch_norm, dropout, dropout_layers, initializer, seed,
                        compute_dtype, input_size=side * side * channels[-1],
                        sync_batch_norm=sync_batch_norm, fused_ops=fused_ops, name="head")

    @property
    def kernels(self):
        return [conv.kernel for conv in self.convolutions] + self.head.kernels

    def histogram_variables(self):
        return {**{f"weights/{conv.name}/{part}": getattr(conv, part)
                   for conv in self.convolutions for part in ("kernel", "bias")},
                **self.head.histogram_variables()}

    def __call__(self, images, training, step=0, replica=None):
        """Logits for a batch of flattened images [batch, 784] (see the module's docstring)."""
        x = tf.reshape(tf.cast(images, self.compute_dtype), [-1, SIDE, SIDE, 1])
        for conv, norm in zip(self.convolutions, self.conv_norms):
            x = conv(x)
            if norm is not None:  # every pixel of every image is one example of its channel
                shape = tf.shape(x)
                x = tf.reshape(norm(tf.reshape(x, [-1, conv.out_channels]), training), shape)
            x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
        return self.head(tf.reshape(x, [tf.shape(x)[0], -1]), training, step, replica)
