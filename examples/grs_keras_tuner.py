"""A keras-tuner workflow with GRSTuner in place of RandomSearch.

The hypermodel is what a keras-tuner user already writes: each hp.Int is a layer width. GRSTuner starts every width
at its max_value, trains that model (trial 0), then removes units one at a time (GRS) while the validation accuracy
stays within 98.5% of the initial one.

Run: python examples/grs_keras_tuner.py   (a few minutes on 2 CPU cores)
"""

import keras

import keras_grs
from keras_grs import datasets


def build_model(hp):
    model = keras.Sequential(
        [
            keras.Input((140,)),
            keras.layers.Dense(hp.Int("units_1", min_value=4, max_value=32, step=4), activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(hp.Int("units_2", min_value=2, max_value=16, step=2), activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(hp.Choice("learning_rate", [1e-3, 1e-2])),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main():
    x, y = datasets.calcium(n_neurons=140, n_frames=3000, seed=0)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = datasets.split(x, y)

    # tuner = keras_tuner.RandomSearch(build_model, objective="val_accuracy", max_trials=10, ...)
    tuner = keras_grs.GRSTuner(
        build_model,
        objective="val_accuracy",
        tolerance=0.985,
        seed=0,
        directory="keras_grs_runs",
        project_name="grs_example",
        overwrite=True,
    )
    tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=3, batch_size=32, verbose=0)
    tuner.results_summary()

    compact = tuner.get_best_models(1)[0]
    print("compact widths:", tuner.get_best_hyperparameters(1)[0].values["units_1"],
          tuner.get_best_hyperparameters(1)[0].values["units_2"])
    print("test accuracy:", compact.evaluate(x_test, y_test, verbose=0)[1])


if __name__ == "__main__":
    main()
