"""Report each epoch's validation accuracy to a hyperparameter-search trial, and stop a trial
the search's pruner gives up on."""


class TrialPruned(Exception):
    """The search pruned the trial after `epoch` epochs, whose checkpoint is saved."""

    def __init__(self, epoch):
        super().__init__(f"pruned after epoch {epoch}")
        self.epoch = epoch


class TrialTakenOver(Exception):
    """Another process found the trial stale (no heartbeat within the grace period, e.g. this
    one was frozen) and failed it; its retry is someone else's. The epoch's checkpoint is saved."""

    def __init__(self, epoch):
        super().__init__(f"taken over after epoch {epoch}")
        self.epoch = epoch


class ReportToTrialAction:
    """Record action (after the epoch's checkpoint, so a pruned run keeps its last epoch): gives
    record["val_accuracy"] to `trial` (an optuna.Trial: `report(value, step)` and
    `should_prune()`) at step = the epoch (from 1), and raises TrialPruned when the trial's
    pruner says to stop, TrialTakenOver when the trial is no longer running. A resumed run
    reports its finished epochs again, as a retried trial starts with none."""

    def __init__(self, trial):
        self.trial = trial

    def end_of_epoch(self, epoch, record):
        from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError

        try:
            try:
                self.trial.report(record["val_accuracy"], epoch + 1)
            except StorageInternalError:
                # A write the database did not finish, most likely because it ended the
                # connection of a process stopped mid-write past the grace period: once more, on
                # a new connection (where a trial since taken over is refused, as below).
                self.trial.report(record["val_accuracy"], epoch + 1)
        except UpdateFinishedTrialError:
            raise TrialTakenOver(epoch + 1) from None
        if self.trial.should_prune():
            raise TrialPruned(epoch + 1)

    def resumed(self, history):
        for record in history:
            self.trial.report(record["val_accuracy"], record["epoch"])
