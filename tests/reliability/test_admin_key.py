"""The operator's key reaches tritonserver without showing in any process's arguments (``ps``), lives in a file
of the server's own (mode 0600, inside its repository, so a second server beside it has its own), and is the key
tritonserver itself checks, over HTTP and gRPC."""

import os
import urllib.error
import urllib.request

import pytest
import tritonclient.grpc as tg

from ziya_trt.serving.process import procs
from ziya_trt.serving.process.server import TritonServer
from ziya_trt.serving.http.checks import ADMIN_GRPC_HEADER, ADMIN_HEADER
from ziya_trt.serving.process.secret_arg import library

pytestmark = [pytest.mark.server,
              pytest.mark.skipif(library() is None, reason="no C compiler: the key goes on the command line")]


def triton_status(srv, headers) -> int:
    """tritonserver's own logging API (restricted), on its loopback port behind the guard."""
    req = urllib.request.Request(f"http://127.0.0.1:{srv._triton_http_port}/v2/logging", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_key_is_in_no_process_arguments(syn_server):
    key = syn_server.admin_key
    showing = {p.pid: p.argv for p in procs.every().values() if any(key in a for a in p.argv)}
    assert not showing, f"the admin key is in these command lines: {showing}"
    argv = procs.read(syn_server.proc.pid).argv
    assert sum(syn_server.key_marker in a for a in argv) == 2  # its HTTP and gRPC restrictions hold the marker
    for pid in [syn_server.proc.pid, *procs.descendants(syn_server.proc.pid)]:
        with open(f"/proc/{pid}/environ", "rb") as f:  # as it was at exec: tritonserver's names the library
            environ = f.read()
        assert key.encode() not in environ
        assert pid == syn_server.proc.pid or b"secret_arg" not in environ  # the stubs do not load it
    assert key not in syn_server.log_file.read_text(errors="replace")


def test_tritonserver_checks_the_key_itself_not_the_marker(syn_server):
    assert triton_status(syn_server, {ADMIN_HEADER: syn_server.admin_key}) == 200
    assert triton_status(syn_server, {ADMIN_HEADER: syn_server.key_marker}) == 403
    assert triton_status(syn_server, {}) == 403
    c = tg.InferenceServerClient(syn_server.grpc_url)
    try:
        assert c.get_log_settings(headers={ADMIN_GRPC_HEADER: syn_server.admin_key}) is not None
        with pytest.raises(Exception):
            c.get_log_settings(headers={ADMIN_GRPC_HEADER: syn_server.key_marker})
    finally:
        c.close()


def test_the_key_file_is_the_servers_own(syn_server, tmp_path):
    f = syn_server.key_file
    assert f.parent == syn_server.repo and f.read_text() == syn_server.admin_key + "\n"
    assert f.stat().st_mode & 0o777 == 0o600 and f.stat().st_uid == os.getuid()
    one, two = TritonServer(tmp_path / "one"), TritonServer(tmp_path / "two")  # repositories side by side
    assert one.key_file != two.key_file and one.admin_key != two.admin_key
