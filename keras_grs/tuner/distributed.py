"""keras-tuner's distributed mode for a pruning search: the chief serves the oracle, workers train.

keras-tuner reads three environment variables (the same script runs in every process):
``KERASTUNER_TUNER_ID`` (``chief`` for the oracle's process, ``tuner0``, ``tuner1``... for the workers),
``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` (where the chief listens). A worker's oracle is
keras-tuner's ``OracleClient``, which forwards ``create_trial``/``update_trial``/``end_trial``/``get_trial``/
``get_space``/``get_best_trials`` over gRPC and nothing else. What a worker needs beyond that it derives itself:

- the search's settings (method, tolerance, widths, acceptance, guard fraction, objective) are the constructor's
  arguments, the same in every process; the worker checks them against the chief's saved ones;
- the seed is the chief's (``oracle.json`` in the project directory, saved before the chief serves): the guard
  split and the batched evaluator's initialisation are seeded by it, so every worker carves the same guard;
- the space is the chief's (``get_space`` over gRPC);
- a trial's parent and removed units are in ``trial_<id>/candidate.json``, written by the chief's oracle.

So every process must see the same project directory: one machine, or a shared file system (NFS, a mounted
bucket) for several. Weight inheritance goes through it too: a child loads its parent's checkpoint.
"""

from __future__ import annotations

import json
import os
import time

from keras_tuner.src.distribute import oracle_chief, oracle_client
from keras_tuner.src.distribute import utils as dist_utils
from keras_tuner.src.engine import trial as trial_module

from keras_grs.tuner.oracles import CANDIDATE_FILE

IDLE_WAIT = 0.2  # seconds a worker waits before asking again when the oracle answers IDLE
POLL = 0.2  # seconds between the chief's checks that the search ended and every worker left
CHIEF_STATE_WAIT = 60  # seconds a worker waits for the chief's oracle.json once the chief answers

# The oracle's settings a worker reads from its own (identically constructed) oracle.
FORWARDED = frozenset(
    {"method", "tolerance", "widths", "units", "method_options", "acceptance", "guard_fraction", "epoch_score",
     "width_hyperparameters", "search", "seed", "bookkeeping"}
)


def is_worker() -> bool:
    """keras-tuner's distributed mode, in a process that trains (not the chief)."""
    return dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle()


def is_chief() -> bool:
    return dist_utils.is_chief_oracle()


class PruningOracleClient(oracle_client.OracleClient):
    """A worker's oracle: keras-tuner's gRPC client, plus the pruning settings of the worker's own oracle (built
    from the same arguments), the chief's seed and space, and each trial's bookkeeping from the project directory.

    Args:
        oracle: the worker's local :class:`~keras_grs.tuner.oracles.PruningOracle`, constructed like the chief's.
    """

    def __init__(self, oracle):
        super().__init__(oracle)
        oracle.hyperparameters = self.get_space()  # waits until the chief serves (it saved its state first)
        chief = _chief_state(oracle)
        if chief.get("pruning") != oracle._config():
            raise ValueError(
                f"this worker's search settings {oracle._config()} differ from the chief's {chief.get('pruning')}; "
                "run every process with the same GRSTuner arguments"
            )
        oracle.seed = chief["seed"]
        oracle._search = None  # rebuilt with the chief's seed and space

    def __getattr__(self, name):
        if name in FORWARDED:
            return getattr(self._oracle, name)
        return super().__getattr__(name)

    def bookkeeping(self, trial_id) -> dict:
        path = os.path.join(self._oracle._project_dir, f"trial_{trial_id}", CANDIDATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} is missing: a worker reads each trial's candidate from the chief's project directory; "
                "on several machines, the directory= of the tuner must be on a file system they share"
            )
        with open(path) as f:
            return json.load(f)

    def create_trial(self, tuner_id):
        trial = super().create_trial(tuner_id)
        if trial.status == trial_module.TrialStatus.IDLE:
            time.sleep(IDLE_WAIT)  # other workers train the step's candidates; do not spin on the chief
        return trial


def _chief_state(oracle) -> dict:
    path = os.path.join(oracle._project_dir, "oracle.json")
    deadline = time.monotonic() + CHIEF_STATE_WAIT
    while True:
        try:
            with open(path) as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            if time.monotonic() > deadline:
                raise FileNotFoundError(
                    f"the chief answers but its state {path} cannot be read: on several machines, the tuner's "
                    "directory= must be on a file system every process shares"
                ) from None
            time.sleep(IDLE_WAIT)


def serve(oracle):
    """Run keras-tuner's Oracle gRPC service until the search is over and every worker has been told so.

    keras-tuner's own ``start_server`` checks every 20 s once the first worker has been stopped; this loop checks
    every ``POLL`` seconds with the same rule (no ongoing trial, no registered worker)."""
    import grpc
    from concurrent import futures

    from keras_tuner.src import protos

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    if not server.add_insecure_port(address):
        raise OSError(f"the chief cannot listen on {address} (KERASTUNER_ORACLE_IP/KERASTUNER_ORACLE_PORT)")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(POLL)
    finally:
        server.stop(grace=1)
