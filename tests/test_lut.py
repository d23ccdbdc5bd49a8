"""The latency predictor: fitted on measured subnets, refitted online, cached per setting and hardware."""
import numpy as np
import pytest

from evaluators import LatencyMeter, LatencySetting, LatencyTable, measure_latency_interleaved
from evaluators.lut import FEATURES, features, table_key, table_path
from supernet import SubnetConfig

FAST = dict(threads=1, warmup=2, repeats=10, block=5)


@pytest.fixture(scope="module")
def sn():
    from conftest import micro_vit
    from supernet import Supernet

    return Supernet.from_timm(micro_vit()).eval()


@pytest.fixture(scope="module")
def table(sn):
    return LatencyTable.build(sn, LatencySetting.resolve("cpu", **FAST), samples=16, progress=False)


def test_fit_recovers_known_costs_exactly(sn, rng):
    """On noise-free ratios made from known non-negative costs, the fit predicts them to round-off."""
    truth = np.abs(rng.normal(size=len(FEATURES))) / np.array([max(1.0, v) for v in features(sn.spec, sn.space.largest())])
    table = LatencyTable(key=table_key(sn, LatencySetting.resolve("cpu", threads=1)))
    configs = [sn.space.sample(rng) for _ in range(60)]
    table.points = [(c.to_dict(), float(features(sn.spec, c) @ truth)) for c in configs]
    table.fit()
    for c in [sn.space.sample(rng) for _ in range(20)]:
        assert table.predict_ratio(c) == pytest.approx(float(features(sn.spec, c) @ truth), rel=1e-6)


def test_features_follow_the_extracted_shape(sn):
    big, small = sn.space.largest(), sn.space.smallest()
    fb, fs = features(sn.spec, big), features(sn.spec, small)
    i = {k: n for n, k in enumerate(FEATURES)}
    assert fb[i["blocks"]] == big.depth and fs[i["blocks"]] == small.depth
    assert fb[i["token drops"]] == 0 and fs[i["token drops"]] >= 1  # the smallest keeps the fewest tokens
    conv = SubnetConfig(big.embed_dim, 2, big.heads[:2], big.mlp[:2], ["conv", "msa"], [1.0, 1.0])
    fc = features(sn.spec, conv)
    assert fc[i["conv blocks"]] == 1 and fc[i["conv"]] > 0 and fc[i["heads"]] == conv.heads[1]


def test_table_round_trips_and_predicts_in_ms_of_the_anchor(table, sn, tmp_path, rng):
    assert table.key["runtime"] == "torch-eager" and table.key["threads"] == 1 and table.key["batch_size"] == 1
    assert len(table.points) == 16 and len(table.costs) == len(FEATURES) and min(table.costs) >= 0
    table.save(tmp_path / "t.json")
    loaded = LatencyTable.load(tmp_path / "t.json")
    for _ in range(10):
        cfg = sn.space.sample(rng)
        assert loaded.predict(cfg) == pytest.approx(table.predict(cfg)) and table.predict(cfg) > 0
    loaded.anchor(2 * table.base_ms)
    cfg = sn.space.sample(rng)
    assert loaded.predict(cfg) == pytest.approx(2 * table.predict(cfg))
    assert table.predict(sn.space.smallest()) < table.predict(sn.space.largest())


def test_prediction_error_on_ratios_is_bounded(table, sn):
    """Ratios to the base model measured in the same blocks: the bound holds whatever this machine's speed.
    The issue's targets (median <= 5%, p90 <= 10%) are measured by benchmarks/predictor.py; a shared CI
    machine gets a looser guard."""
    meter = LatencyMeter(LatencySetting.resolve("cpu", **FAST), (1, 32, 32), reference=sn.vit)
    rng = np.random.default_rng(1)
    held_out = []
    for _ in range(12):
        cfg = sn.space.sample(rng)
        held_out.append((cfg.to_dict(), meter.measure(sn.extract(cfg)).ratio))
    errors = table.errors(held_out)
    assert np.median(errors) <= 0.3, errors


def test_online_refit_learns_from_each_measurement(table, sn):
    cfg = sn.space.largest()
    before, n = table.predict_ratio(cfg), len(table.points)
    try:
        table.add(cfg, 3 * before)  # a machine on which the largest subnet is far slower than predicted
        assert len(table.points) == n + 1 and table.predict_ratio(cfg) > before
    finally:
        del table.points[n:]
        table.fit()


def test_cached_reuses_keys_by_setting_and_heals(sn, tmp_path, capsys):
    s = LatencySetting.resolve("cpu", **FAST)
    a = LatencyTable.cached(sn, s, tmp_path, progress=False)
    b = LatencyTable.cached(sn, s, tmp_path, progress=False)
    assert a.points == b.points  # second call read the file, did not measure again
    c = LatencyTable.cached(sn, LatencySetting.resolve("cpu", **{**FAST, "batch_size": 2}), tmp_path, progress=False)
    assert c.key["batch_size"] == 2 and len(list(tmp_path.glob("lut-*.json"))) == 2
    assert table_path(sn, s, tmp_path) != table_path(sn, LatencySetting.resolve("cpu", "onnxruntime", **FAST),
                                                      tmp_path)
    table_path(sn, s, tmp_path).write_text('{"key": {')  # truncated by a crash or another writer
    healed = LatencyTable.cached(sn, s, tmp_path, progress=False)
    assert healed.key == a.key and "unreadable" in capsys.readouterr().out


def test_a_new_token_scorer_gets_its_own_table(sn, tmp_path):
    s = LatencySetting.resolve("cpu", **FAST)
    before = table_path(sn, s, tmp_path)
    try:
        sn.use_scorer("dynamicvit")
        assert table_path(sn, s, tmp_path) != before
    finally:
        sn.use_scorer("cls_attention")


def test_unit_costs_are_positive_for_width_and_depth(table, sn):
    costs = table.unit_costs(sn.space)
    assert costs.total == pytest.approx(table.predict(sn.space.largest()))
    assert costs.embed >= 0 and costs.head >= 0 and costs.mlp >= 0 and costs.block > 0


def test_extracted_largest_has_no_overhead_over_timm(sn):
    """Loose guard (shared machine); the 5% figure comes from benchmarks/foundation.py."""
    lat = measure_latency_interleaved({"timm": sn.vit, "extracted": sn.extract(sn.space.largest())}, (1, 32, 32),
                                      LatencySetting.resolve("cpu", threads=1, warmup=20, repeats=200))
    assert lat["extracted"].median_ms <= 1.15 * lat["timm"].median_ms, lat


def test_a_table_keeps_its_calibration_and_the_most_recent_points_and_refits_on_each(sn, rng):
    """Searches add every measured subnet; past ``RECENT`` the oldest searched one is forgotten (the calibration
    set never is), and the fit and the skip margin follow the points kept."""
    from conftest import synthetic_table

    from evaluators.lut import CALIBRATION, RECENT

    table = synthetic_table(sn, samples=CALIBRATION - 2)  # the largest, the smallest and random ones
    calibration = list(table.points)
    searched = [sn.space.sample(rng) for _ in range(RECENT + 5)]
    for cfg in searched[:-1]:
        table.add(cfg, table.predict_ratio(cfg))
    margin = table.skip_factor()
    table.add(searched[-1], table.predict_ratio(searched[-1]) / 2)  # far faster than predicted: the margin grows
    assert table.points[:CALIBRATION] == calibration
    assert [c for c, _ in table.points[CALIBRATION:]] == [c.to_dict() for c in searched[-RECENT:]]
    refit = LatencyTable(key=table.key, points=list(table.points))
    refit.fit()
    assert table.costs == refit.costs and table.skip_factor() == pytest.approx(refit.skip_factor())
    assert table.skip_factor() > margin


def test_skip_factor_follows_the_tables_own_error(sn, rng):
    """Noise-free points: only the floor; one point the fit over-predicts by 2× (a subnet far faster here than
    its shape says): the margin grows so that a config like it is measured, not skipped."""
    from conftest import synthetic_table

    from evaluators.lut import MIN_MARGIN

    table = synthetic_table(sn)
    assert table.skip_factor() == pytest.approx(1 + MIN_MARGIN)
    cfg = sn.space.sample(rng)
    table.add(cfg, table.predict_ratio(cfg) / 2)
    assert table.skip_factor() > 1.5
    left_out = LatencyTable(key=table.key, points=table.points[:-1])
    left_out.fit()
    assert table.skip_factor() == pytest.approx(left_out.predict_ratio(cfg) / table.points[-1][1])
