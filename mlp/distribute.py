"""Where a run's replicas live: one device, several devices of one machine, or several workers.

All of it is TensorFlow's own `tf.distribute`; this module only picks and creates the strategy,
in the order TensorFlow needs:
  1. `split_cpu(n)` before TensorFlow initializes its runtime (logical CPU devices can only be
     configured then),
  2. `make_strategy(...)` before any other TensorFlow work (MultiWorkerMirroredStrategy sets up
     collective ops, and reads $TF_CONFIG, at creation),
  3. everything with variables is created inside `strategy.scope()` (see mlp/build.py).

The worker's role (`worker_role`) is read from $TF_CONFIG without TensorFlow, so the command line
can decide who writes the run directory before it imports TensorFlow.
"""

import json
import os
from dataclasses import dataclass


class StrategyError(RuntimeError):
    """The strategy cannot be set up as asked; the message says what to do."""


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in the cluster: `index` among `count` workers; the chief (worker 0,
    or the task of type "chief") writes the run directory, the others only train."""
    index: int = 0
    count: int = 1
    is_chief: bool = True


def worker_role(strategy_name, environ=os.environ):
    """The role $TF_CONFIG gives this process under `strategy_name` (a single worker for
    one_device and mirrored). Raises StrategyError for a missing or malformed TF_CONFIG."""
    if strategy_name != "multi_worker":
        return WorkerRole()
    text = environ.get("TF_CONFIG")
    if not text:
        raise StrategyError("--strategy multi_worker needs TF_CONFIG, e.g. TF_CONFIG='"
                            "{\"cluster\": {\"worker\": [\"host1:12345\", \"host2:12345\"]}, "
                            "\"task\": {\"type\": \"worker\", \"index\": 0}}'")
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        task_type, task_index = task["type"], int(task["index"])
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
        if task_type not in ("chief", "worker"):
            raise ValueError(f"task type {task_type!r} is neither chief nor worker")
        if not 0 <= task_index < len(cluster[task_type]):
            raise ValueError(f"task index {task_index} is outside the cluster's {task_type} list")
    except (ValueError, KeyError, TypeError) as e:
        raise StrategyError(f"TF_CONFIG is not a usable cluster description ({e}); see "
                            "docs/distributed.md") from None
    tasks = ([("chief", i) for i in range(len(chiefs))]
             + [("worker", i) for i in range(len(workers))])
    index = tasks.index((task_type, task_index))
    return WorkerRole(index=index, count=len(tasks), is_chief=index == 0)


def split_cpu(count):
    """Split the CPU into `count` logical devices (nothing for 0 or 1). Must run before
    TensorFlow initializes its runtime; raises StrategyError after."""
    if count <= 1:
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != count:
            devices = len(tf.config.list_logical_devices("CPU"))
            raise StrategyError("--cpu-devices must be set before TensorFlow starts; it is "
                                f"already running with {devices} CPU devices") from None


def make_strategy(name, heartbeat_timeout=10.0):
    """The tf.distribute strategy for `name`:

    one_device: TensorFlow's default strategy, the code path of a run without distribution
      (no replica machinery in the graph at all).
    mirrored: MirroredStrategy over every GPU, else over every logical CPU device.
    multi_worker: MultiWorkerMirroredStrategy from $TF_CONFIG. A dead or stalled worker is found
      by TensorFlow's coordination service: a worker whose heartbeats stop for
      `heartbeat_timeout` seconds is declared dead and every collective in flight is aborted
      (a killed process whose connections close is noticed at once). The collectives get no
      timeout of their own: TensorFlow starts a thread for each timed collective that sleeps out
      the timeout, so a run with hundreds of steps a second would soon hold tens of thousands of
      threads and die.
    """
    import tensorflow as tf

    if name == "one_device":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = ([d.name for d in tf.config.list_logical_devices("GPU")]
                   or [d.name for d in tf.config.list_logical_devices("CPU")])
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        worker_role(name)  # a clear error for a missing or bad TF_CONFIG
        _configure_heartbeats(heartbeat_timeout)
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise StrategyError(f"unknown strategy {name!r}")


def _configure_heartbeats(heartbeat_timeout):
    """Set up the coordination service as MultiWorkerMirroredStrategy would (one standalone
    service led by the chief, or worker 0, over the chief and worker jobs), with our heartbeat
    timeout; the strategy keeps a service that is already configured."""
    import tensorflow as tf
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    except ImportError:  # where other TensorFlow builds keep it
        from tsl.protobuf import coordination_config_pb2

    cluster = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster.num_tasks(job))
            for job in ("chief", "worker") if job in cluster.jobs]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(cluster),
        heartbeat_timeout_in_ms=int(heartbeat_timeout * 1000),
        coordinated_jobs=jobs)


def setup(config):
    """Split the CPU, then make the strategy, for `config` (the order TensorFlow requires)."""
    split_cpu(config.cpu_devices)
    return make_strategy(config.strategy, config.heartbeat_timeout)


def check_same_settings(strategy, settings, workers):
    """Under a strategy of several `workers`, StrategyError naming the `settings` ({name: value},
    those that change what a run computes) in which the workers differ, on every worker at once.

    Each worker sums, over the workers, a 20-bit hash of each setting and its square: all equal
    exactly when count x sum of squares = square of the sum (exact in float64 at these sizes)."""
    import hashlib

    import tensorflow as tf

    if workers <= 1:
        return
    names = sorted(settings)
    hashes = [int(hashlib.sha256(f"{name}={settings[name]!r}".encode()).hexdigest()[:5], 16)
              for name in names]
    mine = tf.constant([[float(h) for h in hashes], [float(h) ** 2 for h in hashes]], tf.float64)
    replicas = strategy.num_replicas_in_sync
    # Each worker has replicas / workers replicas, each contributing this worker's hashes.
    summed = strategy.reduce(tf.distribute.ReduceOp.SUM,
                             strategy.experimental_distribute_values_from_function(
                                 lambda context: mine), axis=None).numpy()
    differ = [name for name, total, squares in zip(names, summed[0], summed[1])
              if replicas * squares != total * total]
    if differ:
        flags = ", ".join(f"--{name.replace('_', '-')} (here {settings[name]!r})"
                          for name in differ)
        raise StrategyError(f"the workers were started with different settings: {flags}; start "
                            "every worker with the same command but for TF_CONFIG")
