"""The seed's initial models: nn1, nn2, cnn1, cnn2 and their ``_scaled`` versions.

Every model uses ReLU, dropout 0.5 and a softmax output, and is compiled with Adam, sparse categorical
cross-entropy (integer labels) and accuracy, ready to train.

==========  ===========================================================================================
nn1         Dense 32, Dropout, Dense 16, Dropout, Dense 8, Dropout, Dense out
nn2         Dense 32, Dropout, Dense out
cnn1        Conv 32 (2x2), MaxPool 2x2, Conv 16 (2x2), Dropout, Flatten, Dense 32, Dropout, Dense 16,
            Dropout, Dense 8, Dropout, Dense out
cnn2        Conv 32 (2x2), MaxPool 2x2, Conv 16 (2x2), Dropout, Flatten, Dense 32, Dropout, Dense out
*_scaled    the same with 512/256/128 in place of 32/16/8
==========  ===========================================================================================

The MLPs take a feature vector; given an image-shaped input they start with a Flatten. The CNNs need an
(height, width, channels) input, such as ``datasets.calcium(image=True)``.
"""

from __future__ import annotations

import keras

DROPOUT = 0.5

# name -> (conv filters, dense units)
_ARCHITECTURES = {
    "nn1": ((), (32, 16, 8)),
    "nn2": ((), (32,)),
    "cnn1": ((32, 16), (32, 16, 8)),
    "cnn2": ((32, 16), (32,)),
}
_SCALE = {32: 512, 16: 256, 8: 128}

NAMES = tuple(name + suffix for suffix in ("", "_scaled") for name in _ARCHITECTURES)


def architecture(name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (conv filters, dense units) of a built-in model."""
    if name not in NAMES:
        raise ValueError(f"unknown model {name!r}; built-in models are {', '.join(NAMES)}")
    base = name.removesuffix("_scaled")
    convs, dense = _ARCHITECTURES[base]
    if name.endswith("_scaled"):
        convs, dense = tuple(_SCALE[w] for w in convs), tuple(_SCALE[w] for w in dense)
    return convs, dense


def build(name: str, input_shape, num_classes: int = 2, learning_rate: float = 1e-3) -> keras.Sequential:
    """Build and compile one of the seed's models.

    Layers have fixed names (conv1, pool1, conv2, flatten, dense1, dense2, dense3, output and dropouts), so that
    reports, width groups and generated C read the same from run to run.

    Args:
        name: nn1, nn2, cnn1, cnn2, or one of them with ``_scaled``.
        input_shape: the shape of one sample, e.g. ``(140,)`` for the MLPs, ``(12, 12, 1)`` for the CNNs.
        num_classes: the number of output classes (integer labels 0..num_classes-1).
        learning_rate: Adam's learning rate.

    Example:
        >>> from keras_grs import models
        >>> model = models.build("cnn1", (12, 12, 1))
        >>> [layer.__class__.__name__ for layer in model.layers][:5]
        ['Conv2D', 'MaxPooling2D', 'Conv2D', 'Dropout', 'Flatten']
    """
    convs, dense = architecture(name)
    input_shape = tuple(int(d) for d in input_shape)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    layers = [keras.Input(shape=input_shape)]
    if convs:
        if len(input_shape) != 3:
            raise ValueError(f"{name} is a 2-D CNN and needs an (height, width, channels) input, got {input_shape}")
        if min(input_shape[:2]) < 5:
            raise ValueError(f"{name} needs images of at least 5x5 pixels, got {input_shape}")
        first, second = convs
        layers += [
            keras.layers.Conv2D(first, (2, 2), activation="relu", name="conv1"),
            keras.layers.MaxPooling2D((2, 2), name="pool1"),
            keras.layers.Conv2D(second, (2, 2), activation="relu", name="conv2"),
            keras.layers.Dropout(DROPOUT, name="dropout_conv2"),
            keras.layers.Flatten(name="flatten"),
        ]
    elif len(input_shape) > 1:
        layers.append(keras.layers.Flatten(name="flatten"))
    for i, units in enumerate(dense, start=1):
        layers += [
            keras.layers.Dense(units, activation="relu", name=f"dense{i}"),
            keras.layers.Dropout(DROPOUT, name=f"dropout{i}"),
        ]
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="output"))
    model = keras.Sequential(layers, name=name)
    compile_classifier(model, learning_rate)
    return model


def compile_classifier(model: keras.Model, learning_rate: float = 1e-3) -> None:
    """Compile ``model`` the way the built-in models are: Adam, sparse categorical cross-entropy, accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
