"""Lower the learning rate on validation-loss plateaus."""


class PlateauLRAction:
    """Decision action: feeds record["val_loss"] to a mlp.rules.PlateauRule and sets the
    trainer's learning rate to what the rule decides."""
    name = "plateau"

    def __init__(self, trainer, rule):
        self.trainer = trainer
        self.rule = rule

    def end_of_epoch(self, epoch, record):
        self.trainer.learning_rate = self.rule.update(record["val_loss"], record["learning_rate"])

    def state(self):
        return self.rule.state()

    def load_state(self, state):
        self.rule.load_state(state)
