import json
import os
import subprocess
import sys

from conftest import ROOT
from supernet.storage import write_atomic


WRITER = """
import json, sys
from supernet.storage import write_atomic
path, k = sys.argv[1], int(sys.argv[2])
for i in range(200):
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps({"writer": k, "data": list(range(2000))})))
"""


def test_two_processes_writing_while_a_third_reads_never_collide_or_see_half_a_file(tmp_path):
    """Two processes saving the phase state or the latency table at once used to share one temporary name
    (FileNotFoundError on the rename) or write the JSON in place (readers saw half of it)."""
    path = tmp_path / "state.json"
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps({"writer": -1, "data": list(range(2000))})))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(k)], env=env, stderr=subprocess.PIPE,
                                text=True) for k in range(2)]
    reads = 0
    while any(w.poll() is None for w in writers):
        assert len(json.loads(path.read_text())["data"]) == 2000
        reads += 1
    for w in writers:
        assert w.returncode == 0, w.stderr.read()
    assert reads > 0 and json.loads(path.read_text())["writer"] in (0, 1)
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
