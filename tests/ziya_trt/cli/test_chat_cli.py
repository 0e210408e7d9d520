"""``ziya-trt chat`` driven through a pseudo-terminal: two turns and a Ctrl-C in the middle of a reply."""

import sys

import pexpect
import pytest

from tests.triton_helpers import wait_metric
from ziya_trt.serving.triton.gauges import METRIC_ACTIVE

pytestmark = pytest.mark.server


def spawn(srv, *args):
    cmd = [sys.executable, "-m", "ziya_trt.cli", "chat", "--url", f"grpc://{srv.grpc_url}", *args]
    return pexpect.spawn(cmd[0], cmd[1:], encoding="utf-8", timeout=30)


def test_two_turns_with_ctrl_c_mid_reply(slow_server):
    child = spawn(slow_server, "--max-new-tokens", "400", "--greedy")
    child.expect("you> ")
    child.sendline("tell me a long story about spring 春天")
    child.expect("bot> ")
    child.expect("story")  # the synthetic engine replays the prompt at 20 tokens/s: the reply is under way
    child.sendintr()
    child.expect(r"\[stopped\]")
    child.expect("you> ")  # the chat goes on
    v, waited = wait_metric(slow_server, METRIC_ACTIVE, "synthetic", lambda v: v == 0)
    assert v == 0, "Ctrl-C left the request generating on the server"
    child.sendline("/params max_new_tokens=6")
    child.expect("'max_new_tokens': 6")
    child.expect("you> ")
    child.sendline("second question")
    child.expect("bot> ")
    child.expect("you> ")
    # the synthetic engine replays the prompt from its start: with history kept, that is the first turn
    reply, note = child.before.strip().splitlines()
    assert reply == ":tell me" and note.startswith("(cut off at max_new_tokens=6")
    child.sendline("/system be brief")
    child.expect("system prompt set")
    child.sendline("third question")  # the server's ziya template has no system role: it says so
    child.expect("no system role")
    child.expect("system prompt cleared")
    child.expect("you> ")
    child.sendline("/reset")
    child.expect("history cleared")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_once_answers_and_exits(slow_server):
    child = spawn(slow_server, "--once", "hello there", "--max-new-tokens", "5")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "hello" in child.before


def test_params_are_typed_by_field_and_replies_say_when_they_were_cut_off(slow_server):
    child = spawn(slow_server, "--max-new-tokens", "4")
    child.expect("you> ")
    child.sendline("/params temperature=0")
    child.expect("'temperature': 0.0")
    child.sendline("/params temperature=0.7 seed=5 stop=x,y")
    child.expect("'temperature': 0.7")
    child.sendline("/params top_k=lots")
    child.expect("is not a int")
    child.sendline("alpha bravo charlie delta echo")
    child.expect(r"cut off at max_new_tokens=4")
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_ctrl_c_stops_a_reply_cleanly_and_twice_at_the_prompt_quits(slow_server):
    child = spawn(slow_server, "--max-new-tokens", "400")
    child.expect("you> ")
    child.sendline("tell me a long story about spring")
    child.expect("bot> :tell")  # the reply is under way
    child.sendintr()
    child.expect(r"\[stopped\]")
    child.expect("you> ")
    child.sendintr()
    child.expect("Ctrl-C again")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Exception ignored" not in child.before and "Traceback" not in child.before


def _sigint_open_threads(pid: int) -> list[str]:
    """The threads of ``pid`` other than its main one that do not block SIGINT (a process-directed Ctrl-C may
    land on any of them, and then the main thread, asleep in the prompt's select(), never sees it)."""
    from pathlib import Path

    open_ = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        if int(task.name) == pid:
            continue
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:  # the thread has ended
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if not int(fields["SigBlk"].strip(), 16) & (1 << (2 - 1)):  # SIGINT is signal 2
            open_.append(f"{task.name} {fields['Name'].strip()}")
    return open_


def test_only_the_main_thread_takes_ctrl_c_after_a_reply(slow_server):
    """gRPC's and the client's threads block SIGINT, so Ctrl-C at the prompt always reaches input()."""
    child = spawn(slow_server, "--max-new-tokens", "3")
    child.expect("you> ")
    child.sendline("hello there")
    child.expect("bot> ")
    child.expect("you> ")
    assert _sigint_open_threads(child.pid) == []
    child.sendintr()
    child.expect("Ctrl-C again")
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_a_long_paste_history_and_typing_during_a_reply(slow_server):
    child = spawn(slow_server, "--max-new-tokens", "40", "--greedy")
    child.expect("you> ")
    # 3,300 characters, 9,900 bytes: a terminal's line discipline alone keeps only 4,095 bytes of a line
    child.sendline("天" * 3300)
    child.expect(r"messages: (\d+) bytes, over the limit")  # the server got the whole line (and refused it)
    assert int(child.match.group(1)) >= 9900
    child.expect("you> ")
    child.sendline("spring is here")
    child.expect("bot> ")
    child.send("typed during the reply")  # the terminal does not echo it into the reply
    child.expect("you> ")
    assert "typed during" not in child.before
    child.expect("typed during the reply")  # it waits at the next prompt, which takes it as typed
    child.sendcontrol("u")  # readline: clear the line
    child.send("\x1b[A")  # up: the last question again
    child.expect("spring is here")
    child.sendline("")
    child.expect("bot> ")
    child.expect("you> ")
    assert "^[[A" not in child.before
    child.sendline("/exit")
    child.expect(pexpect.EOF)
