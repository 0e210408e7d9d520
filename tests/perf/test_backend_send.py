"""The Python-backend send microbenchmark runs against a real tritonserver and reports every case."""

import json

import pytest

from perf.micro import backend_send


@pytest.mark.server
def test_it_measures_each_case_on_a_real_server(capsys):
    assert backend_send.main(["--runs", "1", "--sends", "40"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    got = json.loads(out[-1])
    assert set(got) == {name for name, _, _ in backend_send.CASES}
    for (cpu, wall, _switches), in got.values():  # one run each
        assert cpu > 0 and wall > 0
