"""Evaluate the validation set at the end of each epoch."""


class ValidateAction:
    """Decision action: record["val_loss"] (with the L2 term, as Keras's val_loss),
    "val_data_loss" and "val_accuracy" of the model's current weights."""
    name = "validate"

    def __init__(self, evaluator, batches):
        self.evaluator = evaluator
        self.batches = batches

    def end_of_epoch(self, epoch, record):
        val = self.evaluator.evaluate(self.batches)
        record.update(val_loss=float(val["loss_with_l2"].numpy()),
                      val_data_loss=float(val["loss"].numpy()),
                      val_accuracy=float(val["accuracy"].numpy()))

    def state(self):
        return None

    def load_state(self, state):
        pass
