"""Distillation: best's MLP trained on the labels and on a CNN teacher's predictions (pure MLP
at inference, CNN teacher in training). Unless --teacher names a finished run, the teacher is
trained first, with experiments.teacher's recipe and this run's seed, data, precision and
kernels, into <run dir>/teacher; the training time printed at the end adds the teacher's.
Each batch's loss is (1 - w) * cross-entropy with the labels + w * T^2 * KL(teacher || student)
at temperature T, the teacher seeing the same augmented images (see --teacher).

    python -m experiments.distilled [--help]
    python -m experiments.distilled --teacher tensorboard_logs/teacher-...   # a trained teacher
"""

import dataclasses
from pathlib import Path

from experiments.recipes import BEST, TEACHER
from mlp import cli, run_directory
from mlp.config import Config, ConfigError
from mlp.io import read_json

PROG = "python -m experiments.distilled"

# The settings the teacher takes from the student's command line: how and on what it trains,
# not what it is.
SHARED_SETTINGS = ("seed", "precision", "kernels", "deterministic", "steps_per_loop",
                   "data_dir", "verify_checksums", "validation_size", "train_subset",
                   "histograms", "corruptions")


def train_teacher(config, run_dir):
    """The student's config with its teacher: --teacher's if given (or a resumed run's), else
    the run's own in <run_dir>/teacher, trained here, or resumed, first."""
    teacher_dir = Path(run_dir) / "teacher"
    if config.teacher is not None:
        return config  # a resumed run whose teacher finished
    if config.strategy == "multi_worker":
        raise ConfigError("--strategy multi_worker: the teacher trains on one machine; train it "
                          "with python -m experiments.teacher and pass its run as --teacher")
    if not (teacher_dir / "results.json").exists():
        resuming = (teacher_dir / "config.json").exists()
        if resuming:
            teacher = Config.from_dict(read_json(teacher_dir / "config.json"),
                                       teacher_dir / "config.json")
        else:
            teacher = dataclasses.replace(
                TEACHER, **{name: getattr(config, name) for name in SHARED_SETTINGS},
                logdir=str(run_dir), run_name="teacher")
            teacher_dir.mkdir(exist_ok=True)
            run_directory.save_config(teacher_dir, teacher)
        with run_directory.claim(teacher_dir):
            cli.train_run("teacher", teacher, teacher_dir, resume=resuming,
                          continue_with=f"the same command plus --resume --run-name "
                                        f"{run_dir.name} --logdir {run_dir.parent}")
    config = dataclasses.replace(config, teacher=str(teacher_dir))
    run_directory.save_config(run_dir, config)  # the student has not trained yet: nothing lost
    return config


def main(argv=None):
    """The program: best's command line, with the teacher trained first; the exit code."""
    return cli.main(PROG, "distilled", BEST, __doc__, argv, before_training=train_teacher)


if __name__ == "__main__":
    cli.exit_now(main())
