"""Facts about this machine that several modules need: the CPU's model name and identity (in
cache keys and reports), the cache directory (downloads, the kernel build, the precision probe)
and where Debian installs the dataset. It imports nothing of the project, nor TensorFlow, so
every module may import it, and so may the test suite's controller, which runs no TensorFlow."""

import os
import platform
from pathlib import Path

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def first_processor(cpuinfo="/proc/cpuinfo"):
    """{key: value} of cpuinfo's first processor (its lines up to the first blank one); {} where
    the file cannot be read."""
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model(cpuinfo="/proc/cpuinfo"):
    """The CPU's model name, as lscpu shows it; on CPUs whose /proc/cpuinfo has no "model name"
    (aarch64), the platform's processor or machine name."""
    return (first_processor(cpuinfo).get("model name") or platform.processor()
            or platform.machine() or "unknown CPU")


CPU_ID_KEYS = (  # (cpuinfo's key, the name it is shown with) for x86 and ARM
    (("vendor_id", ""), ("cpu family", "family"), ("model", "model"), ("stepping", "stepping")),
    (("CPU implementer", "implementer"), ("CPU architecture", "architecture"),
     ("CPU part", "part"), ("CPU variant", "variant"), ("CPU revision", "revision")))


def cpu_id(cpuinfo="/proc/cpuinfo"):
    """What tells CPU models apart where their model name does not: a hypervisor may give several
    one name ("AMD EPYC"), and they may train the same seed to different weights. The first
    processor's vendor, family, model and stepping on x86 ("AuthenticAMD family 25 model 17
    stepping 1"), its implementer, architecture, part, variant and revision on ARM; None where
    cpuinfo has neither."""
    fields = first_processor(cpuinfo)
    for keys in CPU_ID_KEYS:
        if all(key in fields for key, _ in keys):
            return " ".join(f"{name} {fields[key]}".strip() for key, name in keys)
    return None


def cpu_name(cpuinfo="/proc/cpuinfo"):
    """The CPU as reports print it: its model name, and its identity where cpuinfo has one."""
    identity = cpu_id(cpuinfo)
    return f"{cpu_model(cpuinfo)} ({identity})" if identity else cpu_model(cpuinfo)


def cpu_signature(cpuinfo="/proc/cpuinfo"):
    """What tells this CPU's instruction set apart, for keys of code compiled for it
    (-march=native): the model name and the feature flags ("flags" on x86, "Features" on ARM)."""
    lines = []
    try:
        with open(cpuinfo) as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features") and line not in lines:
                    lines.append(line)
    except OSError:
        pass
    return "".join(lines) or f"{cpu_model(cpuinfo)} {platform.machine()}"


def cache_dir():
    """Where downloaded files and per-machine builds are kept: $XDG_CACHE_HOME/mlp-fashion-mnist
    (~/.cache by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlp-fashion-mnist"
