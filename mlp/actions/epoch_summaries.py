"""Each epoch's scalars and weight histograms in TensorBoard."""

from mlp.summaries import logged_epochs


class EpochSummariesAction:
    """Record action: the epoch's scalars (train/, validation/) and weight histograms. After a
    resume it writes the finished epochs that the event files lack."""

    def __init__(self, summaries, model, histograms=True):
        self.summaries = summaries
        self.model = model
        self.histograms = histograms

    def end_of_epoch(self, epoch, record, histograms=True):
        step = record["epoch"]
        self.summaries.scalars("train", step, {
            "loss": record["loss"], "data_loss": record["data_loss"],
            "l2_penalty": record["l2_penalty"], "accuracy": record["accuracy"],
            "learning_rate": record["learning_rate"], "epoch_seconds": record["seconds"]})
        self.summaries.scalars("validation", step, {
            "loss": record["val_loss"], "data_loss": record["val_data_loss"],
            "accuracy": record["val_accuracy"]})
        if histograms and self.histograms:
            self.summaries.histograms(step, self.model.histogram_variables())
        self.summaries.flush()

    def resumed(self, history):
        logged = logged_epochs(self.summaries.run_dir)
        last = history[-1]["epoch"]
        for record in history:
            if record["epoch"] not in logged:
                # Only the last finished epoch's weights are at hand for its histograms.
                self.end_of_epoch(record["epoch"] - 1, record, histograms=record["epoch"] == last)
