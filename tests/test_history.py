import io
import math
import pickle

import numpy as np
import pytest
import torch

from lightning_scaling.errors import InvalidInputError
from lightning_scaling.monitor.history import LossHistory


def test_a_million_steps_fit_in_4096_points_and_a_small_state():
    h = LossHistory()
    for s in range(1, 1_000_001):
        h.append(step=s, key=s, loss=2.0 + 5.0 * s**-0.3, tokens=4096.0 * s, flops=1e9 * s)
    assert h.n_observed == 1_000_000
    assert len(h) <= 4096
    state = h.state_dict()
    assert len(pickle.dumps(state)) < 1_000_000
    buf = io.BytesIO()
    torch.save({"h": state}, buf)
    assert buf.tell() < 1_000_000
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["h"]  # plain Python only
    h2 = LossHistory()
    h2.load_state_dict(loaded)
    a, b = h.arrays(), h2.arrays()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # bucket means stay on the curve (the law is smooth inside a 1% bucket)
    arr = h.arrays()
    expected = 2.0 + 5.0 * arr["step"] ** -0.3
    assert np.max(np.abs(arr["loss"] - expected) / expected) < 1e-3
    assert arr["count"].sum() == 1_000_000
    np.testing.assert_allclose(arr["tokens"], 4096.0 * arr["step"])


def test_coarsening_keeps_the_bound_and_every_observation():
    h = LossHistory(recent=10, bucket_ratio=1.001, max_buckets=50)
    for s in range(1, 20_001):
        h.append(step=s, key=float(s), loss=1.0 + 1.0 / s)
    assert len(h) <= 60
    arr = h.arrays()
    assert arr["count"].sum() == 20_000
    assert np.all(np.diff(arr["step"]) > 0)  # oldest first, strictly ordered
    assert h.bucket_ratio > 1.001


def test_recent_points_stay_raw_and_bad_points_are_counted():
    h = LossHistory(recent=4)
    for s, loss in enumerate([3.0, float("nan"), 2.5, float("inf"), 2.4, 2.3, 2.2], start=1):
        h.append(step=s, key=s, loss=loss)
    h.append(step=8, key=0.0, loss=2.1)  # key <= 0 cannot be placed on a log axis
    assert h.n_dropped == 3
    assert h.n_observed == 5
    assert [p[4] for p in h.last(4)] == [2.5, 2.4, 2.3, 2.2]
    arr = h.arrays()
    assert arr["loss"].tolist() == [3.0, 2.5, 2.4, 2.3, 2.2]
    assert math.isnan(arr["tokens"][0])


def test_bad_arguments_and_newer_state_are_refused():
    with pytest.raises(InvalidInputError):
        LossHistory(bucket_ratio=1.0)
    with pytest.raises(InvalidInputError):
        LossHistory(recent=0)
    state = LossHistory().state_dict()
    state["version"] = 99
    with pytest.raises(InvalidInputError, match="newer"):
        LossHistory().load_state_dict(state)
