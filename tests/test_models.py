import pytest

from keras_grs import analyze, count_params, models


@pytest.mark.parametrize(
    "name, shape, widths, classes",
    [
        ("nn1", (140,), (32, 16, 8), ["Dense", "Dropout", "Dense", "Dropout", "Dense", "Dropout", "Dense"]),
        ("nn2", (140,), (32,), ["Dense", "Dropout", "Dense"]),
        ("cnn1", (12, 12, 1), (32, 16, 32, 16, 8),
         ["Conv2D", "MaxPooling2D", "Conv2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense", "Dropout",
          "Dense", "Dropout", "Dense"]),
        ("cnn2", (12, 12, 1), (32, 16, 32),
         ["Conv2D", "MaxPooling2D", "Conv2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense"]),
        ("nn1_scaled", (140,), (512, 256, 128), None),
        ("nn2_scaled", (140,), (512,), None),
        ("cnn1_scaled", (12, 12, 1), (512, 256, 512, 256, 128), None),
        ("cnn2_scaled", (12, 12, 1), (512, 256, 512), None),
    ],
)
def test_seed_models_are_as_the_reference_lists_them(name, shape, widths, classes):
    model = models.build(name, shape)
    assert analyze(model).widths == widths
    if classes:
        assert [type(layer).__name__ for layer in model.layers] == classes
    assert model.compiled and model.output_shape == (None, 2)
    assert model.layers[-1].activation.__name__ == "softmax"
    dropouts = [layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"]
    assert dropouts and set(dropouts) == {0.5}
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert all(layer.kernel_size == (2, 2) for layer in convs)


def test_mlp_flattens_an_image_input_and_classes_are_configurable():
    model = models.build("nn2", (8, 8, 1), num_classes=10)
    assert type(model.layers[0]).__name__ == "Flatten"
    assert model.output_shape == (None, 10)
    assert count_params(model) == (64 * 32 + 32) + (32 * 10 + 10)


def test_bad_names_and_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown model 'nn3'.*nn1"):
        models.build("nn3", (140,))
    with pytest.raises(ValueError, match="height, width, channels"):
        models.build("cnn1", (140,))
    with pytest.raises(ValueError, match="num_classes"):
        models.build("nn1", (140,), num_classes=1)
