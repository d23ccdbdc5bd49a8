import json
import threading

from supernet.storage import write_atomic


def test_concurrent_writers_and_a_reader_never_collide_or_see_half_a_file(tmp_path):
    """Two processes saving the phase state or the latency table at once used to share one temporary name
    (FileNotFoundError on the rename) or write the JSON in place (readers saw half of it)."""
    path = tmp_path / "state.json"
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps({"writer": -1, "data": list(range(2000))})))
    errors, stop = [], threading.Event()

    def writer(k):
        try:
            for i in range(100):
                write_atomic(path, lambda tmp: tmp.write_text(json.dumps({"writer": k, "data": list(range(2000))})))
        except Exception as e:  # noqa: BLE001  (any failure is the finding)
            errors.append(e)

    def reader():
        while not stop.is_set():
            try:
                assert len(json.loads(path.read_text())["data"]) == 2000
            except Exception as e:  # noqa: BLE001
                errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads[:2]:
        t.join()
    stop.set()
    threads[2].join()
    assert not errors, errors[:3]
    assert json.loads(path.read_text())["writer"] in (0, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind


def test_a_failed_write_keeps_the_last_good_file(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(path, lambda tmp: tmp.write_text("good"))

    def half(tmp):
        tmp.write_text("hal")
        raise KeyboardInterrupt

    try:
        write_atomic(path, half)
    except KeyboardInterrupt:
        pass
    assert path.read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["state.json"]
