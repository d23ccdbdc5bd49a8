import numpy as np
import pytest

from evaluators import LatencyTable, measure_latency
from evaluators.latency import measure_latency_interleaved


@pytest.fixture(scope="module")
def table_and_sn():
    from conftest import micro_vit
    from supernet import Supernet

    sn = Supernet.from_timm(micro_vit()).eval()
    return LatencyTable.build(sn, threads=1, progress=False), sn


def test_table_covers_the_space_and_round_trips(table_and_sn, tmp_path, rng):
    table, sn = table_and_sn
    assert table.key["runtime"] == "torch-eager" and table.key["threads"] == 1 and table.key["batch_size"] == 1
    table.save(tmp_path / "t.json")
    loaded = LatencyTable.load(tmp_path / "t.json")
    for _ in range(20):
        cfg = sn.space.sample(rng)
        assert loaded.predict(cfg) == table.predict(cfg) > 0


def test_prediction_error_is_bounded(table_and_sn, rng):
    """The issue's target (median <= 5%, p90 <= 10%) is checked on the bundled model by
    benchmarks/foundation.py; here, on a shared CI machine, a looser guard."""
    table, sn = table_and_sn
    largest = sn.extract(sn.space.largest())
    errors = []
    for _ in range(30):
        cfg = sn.space.sample(rng)
        # timed interleaved with the largest subnet and re-anchored on it, as a run does: the machine's
        # drift between building the table and now (±30% here) is not the table's error
        measured = measure_latency_interleaved({"big": largest, "cfg": sn.extract(cfg)}, (1, 32, 32), threads=1,
                                               warmup=5, repeats=30)
        table.anchor(sn.space.largest(), measured["big"].median_ms)
        errors.append(abs(table.predict(cfg) - measured["cfg"].median_ms) / measured["cfg"].median_ms)
    assert np.median(errors) <= 0.25 and np.percentile(errors, 90) <= 0.5, errors


def test_prediction_orders_big_and_small(table_and_sn):
    table, sn = table_and_sn
    assert table.predict(sn.space.smallest()) < table.predict(sn.space.largest())


def test_anchor_rescales(table_and_sn):
    table, sn = table_and_sn
    largest = sn.space.largest()
    old = table.scale
    try:
        table.anchor(largest, 2 * table.predict(largest))
        assert table.scale == pytest.approx(2 * old)
    finally:
        table.scale = old


def test_cached_reuses_and_keys_by_batch_size(table_and_sn, tmp_path):
    _, sn = table_and_sn
    a = LatencyTable.cached(sn, tmp_path, threads=1, progress=False)
    b = LatencyTable.cached(sn, tmp_path, threads=1, progress=False)
    assert a.entries == b.entries  # second call read the file, did not re-measure
    c = LatencyTable.cached(sn, tmp_path, threads=1, batch_size=2, progress=False)
    assert c.key["batch_size"] == 2 and len(list(tmp_path.glob("lut-*.json"))) == 2


def test_other_runtimes_are_refused_clearly(table_and_sn):
    _, sn = table_and_sn
    with pytest.raises(ValueError, match="torch-eager only"):
        LatencyTable.build(sn, runtime="onnxruntime", progress=False)


def test_extracted_largest_has_no_overhead_over_timm(table_and_sn):
    """Loose guard (shared machine); the 5% figure comes from benchmarks/foundation.py."""
    _, sn = table_and_sn
    lat = measure_latency_interleaved({"timm": sn.vit, "extracted": sn.extract(sn.space.largest())}, (1, 32, 32),
                                      threads=1, warmup=20, repeats=200)
    assert lat["extracted"].median_ms <= 1.15 * lat["timm"].median_ms, lat
