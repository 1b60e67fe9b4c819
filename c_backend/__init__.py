"""c_backend: translate a compact Keras model into LIDE-style dataflow C, and check it against Keras.

    export(model, out_dir, name=None, target="host", precision="float32", sparse="auto", calibration=None)
    verify(model, out_dir, x, y=None, target="host")  -> Verification(max_abs_diff, agreement, accuracies)
    c_backend.ops: the typed operations of the description; c_backend.targets: the machines (TARGETS)
    c_backend.armv6: the ARMv6 cost meter (instructions counted under qemu-arm, cycle estimate for the Pi Zero)
"""

from c_backend.export import Export, export
from c_backend.verify import Verification, build, run, verify

__all__ = ["Export", "Verification", "build", "export", "run", "verify"]
