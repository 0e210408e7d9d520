"""The wake-up microbenchmark measures every case with a real echo process."""

import json

from perf.micro import wake


def test_it_measures_each_case(capsys):
    assert wake.main(["--runs", "1", "--messages", "50"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(got) == {name for name, _, _ in wake.CASES}
    for (cpu_us, switches), in got.values():  # one run each
        assert cpu_us > 0 and switches > 0  # the echo slept between messages: it was woken for each


def test_the_echo_is_measured_message_for_message():
    cpu_us, switches = wake.one(20, 4, 1.0)
    assert cpu_us > 0 and 0 < switches < 10
