import pytest

from keras_grs import select

RESULTS = [
    {"name": "small", "params": 100, "flops": 900, "val_accuracy": 0.90, "test_accuracy": 0.88},
    {"name": "fast", "params": 300, "flops": 400, "val_accuracy": 0.91, "test_accuracy": 0.87},
    {"name": "best", "params": 500, "flops": 1000, "val_accuracy": 0.95, "test_accuracy": 0.93},
]


@pytest.mark.parametrize("criterion, name", [("minparams", "small"), ("minflops", "fast"), ("maxvalacc", "best"),
                                             ("maxtestacc", "best")])
def test_criteria(criterion, name):
    assert select(RESULTS, criterion)["name"] == name


def test_ties_go_to_accuracy_then_flops():
    tied = [dict(RESULTS[0], val_accuracy=0.8), dict(RESULTS[0], name="twin", val_accuracy=0.85)]
    assert select(tied, "minparams")["name"] == "twin"
    same_acc = [dict(RESULTS[2]), dict(RESULTS[2], name="cheaper", flops=10)]
    assert select(same_acc, "maxvalacc")["name"] == "cheaper"


def test_a_function_chooses_by_item_or_index():
    assert select(RESULTS, lambda rs: max(rs, key=lambda r: r["val_accuracy"] - r["params"] / 1e4))["name"] == "best"
    assert select(RESULTS, lambda rs: 1)["name"] == "fast"
    with pytest.raises(ValueError, match="one of the results"):
        select(RESULTS, lambda rs: {"name": "other"})
    with pytest.raises(ValueError, match="out of range"):
        select(RESULTS, lambda rs: 7)


def test_errors():
    with pytest.raises(ValueError, match="unknown selection criterion 'smallest'"):
        select(RESULTS, "smallest")
    with pytest.raises(ValueError, match="needs test data"):
        select([dict(RESULTS[0], test_accuracy=None)], "maxtestacc")
    with pytest.raises(ValueError, match="at least one"):
        select([])
