"""End-of-epoch actions, the controller's (mlp/controller.py) plug-ins, one file each.

Decision actions run before the epoch's checkpoint, with the trainer's averaged weights in the
model: `end_of_epoch(epoch, record)` adds to the epoch's record dict and may set
record["stop"]; each has a `name`, and `state()` / `load_state(state)` that the checkpoint
carries. Record actions run after the checkpoint: `end_of_epoch(epoch, record)`, and
`resumed(history)` once before a restored run continues.

The decision rules themselves (when to lower the learning rate, when to stop) are plain state
machines in mlp/rules.py; an action applies a rule's decision to the trainer.
"""

from mlp.actions.early_stopping import EarlyStoppingAction
from mlp.actions.epoch_summaries import EpochSummariesAction
from mlp.actions.plateau_lr import PlateauLRAction
from mlp.actions.print_epoch import PrintEpochAction
from mlp.actions.report_to_trial import ReportToTrialAction, TrialPruned, TrialTakenOver
from mlp.actions.validate import ValidateAction

__all__ = ["EarlyStoppingAction", "EpochSummariesAction", "PlateauLRAction", "PrintEpochAction",
           "ReportToTrialAction", "TrialPruned", "TrialTakenOver",
           "ValidateAction"]
