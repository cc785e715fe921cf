"""TensorBoard output of a run: scalars per epoch under train/ and validation/, weight histograms,
and the final test metrics under test/. Steps are epoch numbers, starting at 1.
"""

from pathlib import Path

import tensorflow as tf

SUBDIRS = ("train", "validation", "test")


class Summaries:
    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.writers = {name: tf.summary.create_file_writer(str(self.run_dir / name))
                        for name in SUBDIRS}

    def scalars(self, split, epoch, values):
        with self.writers[split].as_default(step=epoch):
            for tag, value in values.items():
                tf.summary.scalar(tag, value)

    def histograms(self, epoch, variables):
        """{tag: variable} as histograms under train/."""
        with self.writers["train"].as_default(step=epoch):
            for tag, variable in variables.items():
                tf.summary.histogram(tag, variable)

    def image(self, split, tag, image, step, description=None):
        with self.writers[split].as_default(step=step):
            tf.summary.image(tag, image, step=step, description=description)

    def hparams(self, config, metrics, step):
        """The run's config as hparams and its final metrics, for TensorBoard's HParams
        dashboard; written at the run directory's top level, where the dashboard looks."""
        from tensorboard.plugins.hparams import api as hp

        values = {key: (value if isinstance(value, (bool, int, float, str)) else str(value))
                  for key, value in config.items() if value is not None}
        writer = tf.summary.create_file_writer(str(self.run_dir))
        with writer.as_default(step=step):
            hp.hparams(values, trial_id=self.run_dir.name)
            for tag, value in metrics.items():
                tf.summary.scalar(tag, value)
        writer.close()

    def text(self, split, tag, value, step=0):
        with self.writers[split].as_default(step=step):
            tf.summary.text(tag, value)

    def flush(self):
        for writer in self.writers.values():
            writer.flush()

    def close(self):
        for writer in self.writers.values():
            writer.close()


def logged_epochs(run_dir, split="validation", tag="loss"):
    """The epochs for which `split`/`tag` is in the run's event files (to resume without gaps or
    duplicates)."""
    from tensorboard.compat.proto.event_pb2 import Event

    epochs = set()
    for path in sorted((Path(run_dir) / split).glob("events.out.tfevents.*")):
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                event = Event.FromString(record.numpy())
                if any(value.tag == tag for value in event.summary.value):
                    epochs.add(int(event.step))
        except tf.errors.DataLossError:
            pass  # a torn last record from a killed process: the records before it still count
    return epochs
