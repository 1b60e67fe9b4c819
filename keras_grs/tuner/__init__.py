"""keras-tuner backend: pruning Oracles and the GRSTuner."""

from keras_grs.tuner.oracles import GRSOracle, JGRSOracle, NWMOracle, PruningOracle, RRSOracle
from keras_grs.tuner.tuner import GRSTuner, ModelHyperModel

__all__ = ["GRSOracle", "GRSTuner", "JGRSOracle", "ModelHyperModel", "NWMOracle", "PruningOracle", "RRSOracle"]
