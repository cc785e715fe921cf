"""The recipes, each its parent plus what makes it what it is, and the ablation studies' variants.

The library's defaults (mlp/config.py) are the improved recipe: 512-256-50 with ReLU, He
initialization, batch norm and dropout 0.2 after the first two blocks, L2 1e-4 on the kernels,
Adam at 1e-3 halved after 2 epochs without improvement, early stopping after 6, at most 60 epochs,
batch 128. tests/recipes/*.json hold every recipe fully resolved: a change to a default that a
recipe depends on fails tests/test_recipes.py until the snapshot is updated on purpose.
"""

import dataclasses

from mlp.config import recipe

IMPROVED = recipe(
    precision="auto",  # the fastest of float32 / bfloat16, measured on this machine
)

BASELINE = recipe(
    parent=IMPROVED,
    # The plain MLP the improved recipe is measured against: none of its techniques.
    hidden_sizes=(300, 80, 50),  # the classic small MLP's widths
    initializer="glorot_uniform",  # Keras's default, instead of He's for ReLU
    batch_norm=False,
    dropout=0.0,
    dropout_layers=0,  # no dropout layers at all (dropout 0 alone would keep them as no-ops)
    l2=0.0,
    lr_schedule="constant",  # no plateau reduction
    early_stopping=False,
    epochs=20,  # a fixed budget in place of early stopping
)

BEST = recipe(
    parent=IMPROVED,
    # Each change was chosen on validation accuracy (docs/log.md, "How best was found"); the
    # points below are those of best's five-seed ablation (docs/results.md). Batch norm, He init,
    # Adam at 1e-3 and batch 128 are improved's. No label smoothing: 0.1 gives -0.10 points,
    # within noise, and four times the raw calibration error.
    whitening="zca",  # a fixed ZCA transform of the pixels as the first layer: +1.15 points
    whitening_epsilon=0.3,  # better on validation than 0.1
    hidden_sizes=(1024, 512, 256),  # improved's 512-256-50: -0.12 points, within noise, 1.9x faster
    dropout=0.15,  # on every block; better on validation than 0.3 (augmentation regularizes too)
    dropout_layers=3,
    l2=5e-5,  # half improved's: the augmentations regularize
    augment_shift=1,  # random 1-pixel shifts: -2.0 points without them
    augment_flip=True,  # random mirror images: -0.17 points without them, within noise
    test_time_flip=True,  # average each test image's prediction with its mirror's
    test_time_shifts=1,  # and with those of both moved by one pixel up, down, left and right
    lr_schedule="cosine",  # decay to 1e-6: 0.49 points over plateau + early stopping
    warmup_epochs=2.0,  # a short ramp before the full rate, as one-cycle schedules do
    epochs=300,  # the most that fits 15 minutes of training; 250 and 150 scored less
    early_stopping=False,  # the schedule sets the length
)

# The speedrun (experiments/speedrun.py): a fixed 5-epoch budget to 0.900 on every seed. It keeps
# improved's batch norm, dropout 0.2 on the first two blocks, L2 1e-4 and He init.
SPEEDRUN = recipe(
    parent=IMPROVED,
    whitening="zca",  # makes 0.90 reachable in a few epochs (12 without it stayed at 0.894)
    whitening_epsilon=0.3,  # the best damping on validation among 0.01-1.0
    hidden_sizes=(1024, 256),  # chosen on validation against 512-256 and 768-256
    label_smoothing=0.1,  # part of the budget's search throughout (docs/results.md)
    batch_size=512,  # large batches: fewer steps per epoch
    learning_rate=5e-3,  # tried 4e-3 to 6e-3 at batch 512
    lr_schedule="cosine",  # 1 epoch of warm-up, then cosine decay to 0
    warmup_epochs=1.0,
    min_learning_rate=0.0,  # decay all the way within the short budget
    epochs=5,  # matched 6 epochs and the cheaper variants on mean validation accuracy
    early_stopping=False,  # a fixed budget
    histograms=False,  # not part of training, but written each epoch: left out of a timed run
)

# The CNN that teaches best's MLP in distillation (experiments.teacher, experiments.distilled):
# two convolution blocks and one hidden layer, with best's augmentation and a cosine schedule.
TEACHER = recipe(
    parent=IMPROVED,
    conv_channels=(32, 64),  # 28x28 -> 14x14x32 -> 7x7x64, then the MLP head
    hidden_sizes=(256,),
    augment_shift=1,  # best's augmentation and test-time mirror
    augment_flip=True,
    test_time_flip=True,
    lr_schedule="cosine",  # 1 epoch of warm-up, then cosine decay to 1e-6
    warmup_epochs=1.0,
    epochs=20,  # a convolution epoch costs several of the MLP's on a CPU
    early_stopping=False,
)

RECIPES = {"improved": IMPROVED, "baseline": BASELINE, "best": BEST, "speedrun": SPEEDRUN,
           "teacher": TEACHER}


SAM_RHO = 0.05  # Foret et al. (2021)'s default radius
# The mixing most used together (timm's defaults): mixup's alpha from its ImageNet runs (Zhang et
# al., 2018), cutmix's from its paper (Yun et al., 2019); each batch takes one of the two.
MIXUP_ALPHA, CUTMIX_ALPHA = 0.2, 1.0
LOOKAHEAD_STEPS, LOOKAHEAD_ALPHA = 5, 0.5  # Zhang et al. (2019)'s usual k and alpha


def improved_variants():
    """The ablation of the improved recipe: one technique taken out at a time, the baseline, and
    the techniques put in at their papers' usual settings: sharpness-aware minimization, mixup
    with cutmix, and Lookahead."""
    change = lambda **changes: dataclasses.replace(IMPROVED, **changes)  # noqa: E731
    return {
        "no batch norm": change(batch_norm=False),
        "no dropout": change(dropout=0.0),
        "no L2": change(l2=0.0),
        "Glorot init": change(initializer="glorot_uniform"),
        "constant LR": change(lr_schedule="constant"),
        "no early stopping": change(early_stopping=False),  # the recipe's maximum epochs
        "baseline": BASELINE,
        **_techniques_added(change),
    }


def best_variants():
    """The ablation of best: one ingredient taken out at a time, label smoothing, which the
    300-epoch study dropped, put back, and the techniques tried on improved put in at the same
    settings: sharpness-aware minimization, mixup with cutmix, and Lookahead. Test-time views
    belong to their augmentation: a variant trained without flips is evaluated without mirrors, one
    trained without shifts without shifted copies (the study's "no test-time views" row is the
    full recipe's own runs evaluated on the plain images)."""
    change = lambda **changes: dataclasses.replace(BEST, **changes)  # noqa: E731
    return {
        "no whitening": change(whitening="none"),
        "no augmentation (flip, shift)": change(augment_flip=False, augment_shift=0,
                                                test_time_flip=False, test_time_shifts=0),
        "no flip": change(augment_flip=False, test_time_flip=False),
        "no shift": change(augment_shift=0, test_time_shifts=0),
        "with label smoothing 0.1": change(label_smoothing=0.1),
        "plateau LR + early stopping instead of cosine": change(
            lr_schedule="plateau", early_stopping=True, warmup_epochs=0.0),
        _improved_widths_label(): change(
            hidden_sizes=IMPROVED.hidden_sizes, dropout=IMPROVED.dropout,
            dropout_layers=IMPROVED.dropout_layers),
        **_techniques_added(change),
    }


def _techniques_added(change):
    """The techniques both ablations put in, at their papers' usual settings."""
    return {
        f"SAM (rho {SAM_RHO:g})": change(sam_rho=SAM_RHO),
        f"mixup {MIXUP_ALPHA:g} / cutmix {CUTMIX_ALPHA:g}": change(mixup_alpha=MIXUP_ALPHA,
                                                                  cutmix_alpha=CUTMIX_ALPHA),
        f"Lookahead (k {LOOKAHEAD_STEPS}, alpha {LOOKAHEAD_ALPHA:g})": change(
            lookahead_steps=LOOKAHEAD_STEPS, lookahead_alpha=LOOKAHEAD_ALPHA),
    }


def _improved_widths_label():
    """The label of best's variant with improved's widths and dropout, made from their values."""
    widths = "-".join(map(str, IMPROVED.hidden_sizes))
    return f"improved widths ({widths}), dropout {IMPROVED.dropout:g} x{IMPROVED.dropout_layers}"


# The studies experiments.ablation can run: the recipe taken apart and its variants.
ABLATIONS = {"improved": (IMPROVED, improved_variants), "best": (BEST, best_variants)}


# Hyperparameter searches (experiments/search.py): a base recipe and a search space. A space is
# a function of an optuna trial returning {Config field: value}; `grid` lists the values
# `--sampler grid` walks (each name one the space suggests).
@dataclasses.dataclass(frozen=True)
class SearchSpace:
    base: object  # the recipe (a Config) every trial starts from
    suggest: object  # trial -> {field: value}
    grid: dict  # {parameter: [values]} for --sampler grid
    about: str


def _widths(text):
    return tuple(int(width) for width in text.split("-"))


def improved_space(trial):
    """Around the improved recipe: minutes per trial."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 3e-3, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.4),
        "l2": trial.suggest_float("l2", 1e-6, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256]),
        "hidden_sizes": _widths(trial.suggest_categorical(
            "hidden_sizes", ["512-256-50", "1024-256-50", "1024-512-256"])),
    }


def best_space(trial):
    """Around best, toward 0.930: wider first layers, larger batches under the one-cycle
    schedule, label smoothing, random erasing, and dropout / L2 / learning rate re-tuned
    jointly."""
    return {
        "hidden_sizes": _widths(trial.suggest_categorical(
            "hidden_sizes", ["1024-512-256", "2048-512-256", "2048-1024-256"])),
        "batch_size": trial.suggest_categorical("batch_size", [128, 256, 512]),
        "learning_rate": trial.suggest_float("learning_rate", 5e-4, 4e-3, log=True),
        "dropout": trial.suggest_float("dropout", 0.05, 0.35),
        "l2": trial.suggest_float("l2", 1e-5, 2e-4, log=True),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.15),
        "augment_erase": trial.suggest_categorical("augment_erase", [0.0, 0.25, 0.5]),
    }


SEARCH_SPACES = {
    "improved": SearchSpace(IMPROVED, improved_space, {
        "learning_rate": [5e-4, 1e-3, 2e-3], "dropout": [0.1, 0.2, 0.3], "l2": [1e-5, 1e-4],
        "batch_size": [128], "hidden_sizes": ["512-256-50", "1024-256-50"]},
        "learning rate, dropout, L2, batch size and widths around the improved recipe"),
    "best": SearchSpace(BEST, best_space, {
        "hidden_sizes": ["1024-512-256", "2048-512-256"], "batch_size": [256, 512],
        "learning_rate": [1e-3, 2e-3], "dropout": [0.15], "l2": [5e-5],
        "label_smoothing": [0.0, 0.1], "augment_erase": [0.0, 0.25]},
        "widths, batch, learning rate, dropout, L2, label smoothing and erasing around best"),
}
