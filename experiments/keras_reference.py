"""Keras's own way, for comparison: the same architecture trained by `model.fit`.

The benchmark times one epoch of it per round (`KerasFit`); the speedrun times the seed recipe
with it to a target accuracy (`keras_time_to_accuracy`). Nothing here is used by our own loop.
"""

import time


def keras_model(config):
    """`config`'s MLP as a keras.Sequential: Dense + ReLU, batch norm, dropout after the first
    --dropout-layers blocks, L2 on every kernel as Keras regularizers."""
    import keras

    layers = [keras.Input((784,))]
    regularizer = keras.regularizers.L2(config.l2)
    for i, width in enumerate(config.hidden_sizes):
        layers.append(keras.layers.Dense(width, activation="relu",
                                         kernel_initializer=config.initializer,
                                         kernel_regularizer=regularizer))
        layers.append(keras.layers.BatchNormalization())
        if i < config.dropout_layers:
            layers.append(keras.layers.Dropout(config.dropout))
    layers.append(keras.layers.Dense(10, kernel_regularizer=regularizer))
    return keras.Sequential(layers)


class KerasFit:
    """One epoch of Keras model.fit per call, on the identical architecture and optimizer."""

    def __init__(self, config, splits, steps_per_execution):
        import keras

        self.splits = splits
        self.batch_size = config.batch_size
        self.model = keras_model(config)
        self.model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=["accuracy"], steps_per_execution=steps_per_execution)
        self.seconds = []
        timer = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: self.seconds.append(-time.perf_counter()),
            on_epoch_end=lambda epoch, logs: self.seconds.append(self.seconds.pop()
                                                                 + time.perf_counter()))
        self.callbacks = [timer]

    def epoch(self):
        self.model.fit(self.splits.train_images, self.splits.train_labels,
                       batch_size=self.batch_size, epochs=1, shuffle=True, verbose=0,
                       callbacks=self.callbacks)
        return self.seconds[-1]

    def test_accuracy(self):
        _, accuracy = self.model.evaluate(self.splits.test_images, self.splits.test_labels,
                                          batch_size=1000, verbose=0)
        return float(accuracy)


def keras_time_to_accuracy(config, splits, target, seed, out=None):
    """Train `config`'s model (the seed recipe) with Keras model.fit as the recipe was written:
    Adam, ReduceLROnPlateau and EarlyStopping on validation loss. Returns {"seconds": training
    time until the test accuracy first reached `target` (None if it never did), "epochs",
    "test_accuracy": at that epoch (else the last), "epoch_seconds", "test_accuracies"}. The
    time is the epochs' training steps only: the validation passes and the per-epoch test
    evaluation are not counted."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras_model(config)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    record = {"seconds": None, "epochs": 0, "test_accuracy": None, "epoch_seconds": [],
              "test_accuracies": []}

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started, self.stopped = time.perf_counter(), None

        def on_test_begin(self, logs=None):  # fit's validation pass begins
            self.stopped = self.stopped or time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            record["epoch_seconds"].append((self.stopped or time.perf_counter()) - self.started)
            _, accuracy = self.model.evaluate(splits.test_images, splits.test_labels,
                                              batch_size=1000, verbose=0)
            record.update(epochs=epoch + 1, test_accuracy=float(accuracy))
            record["test_accuracies"].append(float(accuracy))
            print(f"    keras fit epoch {epoch + 1}: test {accuracy:.4f}, training "
                  f"{sum(record['epoch_seconds']):.1f}s", file=out, flush=True)
            if accuracy >= target:
                record["seconds"] = sum(record["epoch_seconds"])
                self.model.stop_training = True

    model.fit(splits.train_images, splits.train_labels, batch_size=config.batch_size,
              epochs=config.epochs, shuffle=True, verbose=0,
              validation_data=(splits.validation_images, splits.validation_labels),
              callbacks=[keras.callbacks.ReduceLROnPlateau(
                             factor=config.plateau_factor, patience=config.plateau_patience,
                             min_delta=config.plateau_min_delta, min_lr=config.min_learning_rate),
                         keras.callbacks.EarlyStopping(
                             patience=config.early_stopping_patience, restore_best_weights=True),
                         Clock()])
    return record
