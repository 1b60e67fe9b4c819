"""keras-grs: search for compact Keras models (GRS, JGRS, RRS, NWM), then translate them into C.

Public names::

    analyze(model) -> Structure        the model's width groups (what can be pruned)
    shrink(model, remove) -> Model     a physically smaller copy with units removed, weights copied
    count_params, count_flops          the seed's counting conventions
    estimate_latency(model)            estimated Raspberry Pi Zero milliseconds of the generated C
    models.build(name, input_shape)    the seed's nn1, nn2, cnn1, cnn2 (and *_scaled)
    datasets.calcium(), digits(), split()
    GRSTuner(hypermodel, method="grs")  a keras-tuner Tuner that prunes (GRS, JGRS, RRS, NWM)
    GRSOracle, RRSOracle, NWMOracle, JGRSOracle   the methods as keras-tuner Oracles
    eup.threshold / quantize / tq      the unstructured stage
    metrics.BalancedAccuracy           a metric to search on for imbalanced classes
    select(results, criterion)         design selection
    prune(models, x, y, validation_data, ...) -> PruneResult   the whole job

Importing keras_grs keeps XLA's compiled programs on disk between processes (``keras_grs.xla_cache``; turn it off
with ``KERAS_GRS_XLA_CACHE=0``).
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _run_as_command() -> bool:
    """Whether this process is the ``keras-grs`` command (the console script or ``python -m keras_grs``)."""
    argv = getattr(sys, "orig_argv", sys.argv)
    return os.path.basename(sys.argv[0] or "") == "keras-grs" or any(
        argv[i: i + 2] == ["-m", "keras_grs"] for i in range(len(argv)))


# The command runs with TensorFlow's C++ log lines off unless asked for (TF_CPP_MIN_LOG_LEVEL=0-2): on a machine
# without a GPU it logs an error for the missing CUDA driver, and one for every compiled program it loads from the
# cache (it reads an entry as text before reading it as binary). Errors that matter reach Python as exceptions. Set
# here, before TensorFlow loads and reads it: keras_grs/cli.py runs only after this package has loaded TensorFlow.
if _run_as_command():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_grs import xla_cache  # noqa: E402

xla_cache.enable()  # before anything compiles: compiled programs are loaded from disk when a process has them

from keras_grs import datasets, eup, metrics, models  # noqa: E402
from keras_grs.costs import count_flops, count_params, flops_by_layer  # noqa: E402
from keras_grs.latency import estimate_latency  # noqa: E402
from keras_grs.structure import Structure, UnsupportedLayerError, WidthGroup, analyze  # noqa: E402
from keras_grs.pipeline import ModelResult, PruneResult, prune  # noqa: E402
from keras_grs.selection import select  # noqa: E402
from keras_grs.surgery import shrink  # noqa: E402
from keras_grs.tuner import GRSOracle, GRSTuner, JGRSOracle, NWMOracle, RRSOracle  # noqa: E402
from keras_grs import optuna  # noqa: E402  (keras_grs.optuna.GRSSampler, ... after a plain "import keras_grs")

__version__ = "0.1.0"

__all__ = [
    "GRSOracle",
    "GRSTuner",
    "JGRSOracle",
    "NWMOracle",
    "RRSOracle",
    "Structure",
    "UnsupportedLayerError",
    "WidthGroup",
    "ModelResult",
    "PruneResult",
    "analyze",
    "count_flops",
    "count_params",
    "datasets",
    "estimate_latency",
    "eup",
    "flops_by_layer",
    "metrics",
    "models",
    "prune",
    "select",
    "shrink",
]
