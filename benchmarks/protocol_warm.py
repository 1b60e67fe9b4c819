"""The nn1 search at the seed's protocol, timed in a fresh process or after other searches in the same process.

``make bench-search`` times the complete 100-epoch nn1 search after the capped searches of both evaluators in the
same process; a user's notebook does the same. This times that search (batched, seed 0, until no candidate is
valid) alone, or after three shorter searches (keras nn1 16 trials at 10 epochs, keras cnn1 11 trials at 5,
batched cnn1 11 trials at 100), so the two can be compared side by side. Prints one line per run.

    python benchmarks/protocol_warm.py fresh
    python benchmarks/protocol_warm.py after            # after the other searches
    python benchmarks/protocol_warm.py after --freeze   # ... then gc.freeze() before the timed search
"""

from __future__ import annotations

import argparse
import gc
import time

from common import calcium_splits, pretrained, search


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["fresh", "after"])
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() the objects of the earlier searches")
    args = parser.parse_args()
    data = calcium_splits("nn1", seed=0)
    model = pretrained("nn1", data[0], 30, seed=0)
    if args.mode == "after":
        images = calcium_splits("cnn1", seed=0)
        cnn = pretrained("cnn1", images[0], 30, seed=0)
        search(model, data, evaluator="keras", epochs=10, max_trials=16)
        search(cnn, images, evaluator="keras", epochs=5, max_trials=11)
        search(cnn, images, evaluator="batched", epochs=100, max_trials=11)
        if args.freeze:
            gc.collect()
            gc.freeze()
    start = time.perf_counter()
    run = search(model, data, evaluator="batched", epochs=100)
    print(f"nn1 protocol, {args.mode}{' + freeze' if args.freeze else ''}: {time.perf_counter() - start:.2f} s, "
          f"{run.trials} trials, {run.structure}, {len(gc.get_objects()):,} objects tracked", flush=True)


if __name__ == "__main__":
    main()
