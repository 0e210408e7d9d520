"""``ziya-trt chat`` driven through a pseudo-terminal: two turns and a Ctrl-C in the middle of a reply."""

import sys

import pexpect
import pytest

from tests.triton_helpers import wait_metric
from ziya_trt.serving.gauges import METRIC_ACTIVE

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
    assert child.before.strip() == ":tell me"
    child.sendline("/system be brief")
    child.expect("no system role")
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
