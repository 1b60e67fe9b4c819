"""Sequence models: one fit per candidate against the batched evaluator.

Until the batched evaluator took dilated convolutions and causal padding (and recurrent layers), such models were
trained one fit per candidate. The simulated calcium data (140 neurons, 3000 frames, 70/20/10), each frame's 140
values read as a sequence of 20 steps of 7 channels; the models (``--models``): ``tcn``, a block of three causal
Conv1D layers of 16 filters (kernel 3, dilation 1, 2 and 4), global average pooling and the output; ``lstm``, an
LSTM of 24 units returning every step's state, then an LSTM of 16 and the output; ``lstm-dropout``, the same
with dropout 0.2 on each LSTM's inputs and state (``dropout``, ``recurrent_dropout``); ``gru``, a GRU of 24 units
and the output. Each is pretrained 30 epochs, then pruned by GRS with seed 0 for the same number of trials with each
evaluator (trial 0 validates the pretrained model, then whole GRS steps); wall time of the search, what it kept,
and whether the batched evaluator trained every step itself (``trained as``).

    python benchmarks/sequence_speed.py [--models tcn lstm lstm-dropout gru] [--epochs 20] [--max-trials 7]

Writes benchmarks/results/sequence_speed.md.
"""

from __future__ import annotations

import argparse

from channelwise_speed import HEADER
from common import calcium_splits, evaluator_rows, evaluator_runs, machine, write

import keras

STEPS, CHANNELS = 20, 7


def tcn(input_shape):
    model = keras.Sequential([keras.Input(input_shape)], name="tcn")
    for dilation in (1, 2, 4):
        model.add(keras.layers.Conv1D(16, 3, dilation_rate=dilation, padding="causal", activation="relu"))
    model.add(keras.layers.GlobalAveragePooling1D())
    model.add(keras.layers.Dense(2, activation="softmax"))
    return model


def lstm(input_shape, dropout=0.0):
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.LSTM(24, return_sequences=True, dropout=dropout, recurrent_dropout=dropout),
        keras.layers.LSTM(16, dropout=dropout, recurrent_dropout=dropout),
        keras.layers.Dense(2, activation="softmax")], name="lstm")


def lstm_dropout(input_shape):
    return lstm(input_shape, dropout=0.2)


def gru(input_shape):
    return keras.Sequential([keras.Input(input_shape), keras.layers.GRU(24),
                             keras.layers.Dense(2, activation="softmax")], name="gru")


MODELS = {"tcn": tcn, "lstm": lstm, "lstm-dropout": lstm_dropout, "gru": gru}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--max-trials", type=int, default=7)
    args = parser.parse_args()
    data = [(x.reshape(-1, STEPS, CHANNELS), y) for x, y in calcium_splits("nn1", seed=0)]
    rows = []
    for name in args.models:
        keras.utils.set_random_seed(0)
        model = MODELS[name]((STEPS, CHANNELS))
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(*data[0], epochs=30, batch_size=32, verbose=0)
        runs = evaluator_runs(model, data, epochs=args.epochs, seed=0, max_trials=args.max_trials)
        rows += evaluator_rows(runs, name)
    write("sequence_speed.md", [
        "# Sequence models: keras evaluator vs batched evaluator", "",
        f"Machine: {machine()}.", "",
        f"GRS, seed 0, {args.epochs} fine-tuning epochs per candidate, batch 32, at most {args.max_trials} trials, "
        f"the seed's acceptance rule, on the calcium data read as {STEPS} steps of {CHANNELS} channels, each model "
        "pretrained 30 epochs (`benchmarks/sequence_speed.py`; the models in its docstring: tcn, three causal Conv1D "
        "layers of 16 filters, kernel 3, dilation 1, 2, 4, and global average pooling; lstm, LSTM 24 (sequences) "
        "then LSTM 16; lstm-dropout, the same with dropout and recurrent_dropout 0.2; gru, GRU 24).", "",
        *HEADER, *rows,
    ])


if __name__ == "__main__":
    main()
