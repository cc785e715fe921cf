"""One printed line per epoch."""

import sys


class PrintEpochAction:
    """Record action: the epoch's losses, accuracies, learning rate and seconds on `out`."""

    def __init__(self, epochs, out=None):
        self.epochs = epochs
        self.out = out or sys.stdout

    def end_of_epoch(self, epoch, record):
        print(f"epoch {epoch + 1:3d}/{self.epochs}  loss {record['loss']:.4f} "
              f"(data {record['data_loss']:.4f} + l2 {record['l2_penalty']:.4f})  "
              f"acc {record['accuracy']:.4f}  val_loss {record['val_loss']:.4f}  "
              f"val_acc {record['val_accuracy']:.4f}  lr {record['learning_rate']:.2e}  "
              f"{record['seconds']:.2f}s", file=self.out, flush=True)

    def resumed(self, history):
        pass
