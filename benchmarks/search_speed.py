"""Search speed: GRS on nn1 with the simulated calcium data, keras evaluator vs batched evaluator, in one run.

The seed's protocol: 3000 frames of 140 neurons, fine-tuning epochs per candidate (100 in the seed), batch 32.
Both evaluators run the same number of trials (--max-trials) from the same pretrained model, so their wall times
compare the same work; the final structure, parameters and test accuracy show the quality.

Run: .venv/bin/python benchmarks/search_speed.py [--epochs 100] [--max-trials 13]
     (writes benchmarks/results/search_speed.md)
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_grs  # noqa: E402
from keras_grs import datasets, models  # noqa: E402
from keras_grs.scoring import accuracy  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--max-trials", type=int, default=13)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    args = parser.parse_args()
    x, y = datasets.calcium(n_neurons=140, n_frames=3000, seed=0)
    (xt, yt), validation, test = datasets.split(x, y, val=0.2, test=0.1)
    keras.utils.set_random_seed(0)
    pretrained = models.build("nn1", (140,))
    pretrained.fit(xt, yt, epochs=args.pretrain_epochs, batch_size=32, verbose=0)
    weights = pretrained.get_weights()
    rows = []
    for evaluator in ("keras", "batched"):
        model = models.build("nn1", (140,))
        model.set_weights(weights)
        tuner = keras_grs.GRSTuner.from_model(model, train_first=False, seed=0, evaluator=evaluator,
                                              max_trials=args.max_trials, directory=tempfile.mkdtemp())
        tuner.oracle.verbose = 0
        start = time.perf_counter()
        tuner.search(xt, yt, validation_data=validation, epochs=args.epochs, batch_size=32, verbose=0)
        seconds = time.perf_counter() - start
        compact = tuner.get_best_models(1)[0]
        rows.append((evaluator, seconds, len(tuner.oracle.trials), str(keras_grs.analyze(compact)),
                     keras_grs.count_params(compact), accuracy(compact, *test)))
        print(rows[-1], flush=True)
    (_, keras_s, *_), (_, batched_s, *_) = rows
    lines = [
        "# Search speed: keras evaluator vs batched evaluator",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. GRS on nn1, "
        f"simulated calcium data (3000 frames, 140 neurons), {args.epochs} fine-tuning epochs per candidate, batch 32, "
        f"the same {args.max_trials} trials for both (trial 0 validates the same pretrained model), one run of "
        "`benchmarks/search_speed.py`.",
        "",
        "| evaluator | wall s | trials | s per trial | compact structure | params | test accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, seconds, trials, structure, params, test_acc in rows:
        lines.append(f"| {name} | {seconds:.1f} | {trials} | {seconds / trials:.2f} | {structure} | {params:,} | "
                     f"{test_acc:.4f} |")
    lines += ["", f"Batched is {keras_s / batched_s:.1f}x faster on this run."]
    out = Path(__file__).parent / "results" / "search_speed.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
