"""Train the seed's nn1 on simulated calcium data, look at its width groups, remove units by hand, fine-tune.

Run: python examples/analyze_and_shrink.py
"""

import keras_grs
from keras_grs import datasets, models


def main():
    x, y = datasets.calcium(n_neurons=140, n_frames=3000, seed=0)
    train, val, test = datasets.split(x, y)
    model = models.build("nn1", x.shape[1:])
    model.fit(*train, epochs=20, batch_size=32, validation_data=val, verbose=0)
    print("initial", keras_grs.analyze(model), "params", keras_grs.count_params(model),
          "val acc", round(model.evaluate(*val, verbose=0)[1], 4))

    # Remove half of dense1's units and two of dense2's; the child inherits every surviving weight.
    child = keras_grs.shrink(model, {"dense1": list(range(0, 32, 2)), "dense2": [0, 1]})
    print("shrunk ", keras_grs.analyze(child), "params", keras_grs.count_params(child),
          "val acc before fine-tuning", round(child.evaluate(*val, verbose=0)[1], 4))
    child.fit(*train, epochs=5, batch_size=32, validation_data=val, verbose=0)
    print("fine-tuned val acc", round(child.evaluate(*val, verbose=0)[1], 4),
          "test acc", round(child.evaluate(*test, verbose=0)[1], 4))


if __name__ == "__main__":
    main()
