"""The preloaded library that puts the admin key where tritonserver's command line has a marker, tried on stand-in
programs named ``tritonserver`` (a copy of ``printf``, of ``env``); the key file; the fallback without a compiler.
A real tritonserver: tests/reliability/test_admin_key.py."""

import os
import shutil
import subprocess

import pytest

from ziya_trt.serving.process import secret_arg
from ziya_trt.serving.process.secret_arg import hide, library, write_private

MARKER = "@admin-key-0123456789abcdef@"

pytestmark = pytest.mark.skipif(library() is None, reason="no C compiler here to build the library")


def stand_in(tmp_path, tool: str, name: str = "tritonserver") -> str:
    path = tmp_path / name
    shutil.copy(shutil.which(tool), path)
    return str(path)


def test_the_key_reaches_main_in_place_of_the_marker(tmp_path):
    key_file = write_private(tmp_path / "admin_key", "s3cret-KEY\n")
    cmd, env = hide([stand_in(tmp_path, "printf"), "%s\\n", f"--http-restricted-api=logging:h={MARKER}", "--x"],
                    dict(os.environ), MARKER, "s3cret-KEY", key_file)
    assert not any("s3cret-KEY" in a for a in cmd)  # what ps would show
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["--http-restricted-api=logging:h=s3cret-KEY", "--x"]


def test_another_program_keeps_the_marker(tmp_path):  # mpirun passes it on to its tritonservers
    key_file = write_private(tmp_path / "admin_key", "s3cret-KEY\n")
    cmd, env = hide([stand_in(tmp_path, "printf", "mpirun"), "%s\\n", MARKER], dict(os.environ), MARKER,
                    "s3cret-KEY", key_file)
    assert subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout == MARKER + "\n"


@pytest.mark.parametrize("preload_before", ["", "libfoo.so"])
def test_tritonservers_children_do_not_load_it(tmp_path, preload_before):
    key_file = write_private(tmp_path / "admin_key", "s3cret-KEY\n")
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | (
        {"LD_PRELOAD": preload_before} if preload_before else {})
    cmd, env = hide([stand_in(tmp_path, "env")], base, MARKER, "s3cret-KEY", key_file)
    assert str(library()) in env["LD_PRELOAD"]
    seen = dict(line.split("=", 1) for line in subprocess.run(
        cmd, env=env, capture_output=True, text=True, check=True).stdout.splitlines() if "=" in line)
    assert seen.get("LD_PRELOAD") == (preload_before or None)  # as it was: what its children inherit
    assert not any(k.startswith("ZIYA_SECRET") or k == "ZIYA_PRELOAD_WAS" for k in seen)


def test_without_a_compiler_the_key_goes_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("ZIYA_TRT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(secret_arg, "_built", {})
    assert library() is None
    cmd, env = hide(["tritonserver", f"--x=h:{MARKER}"], {"PATH": "/bin"}, MARKER, "KEY", tmp_path / "k")
    assert cmd == ["tritonserver", "--x=h:KEY"] and env == {"PATH": "/bin"}


def test_the_key_file_is_the_users_alone(tmp_path):
    f = tmp_path / "admin_key"
    f.write_text("old")
    f.chmod(0o644)
    write_private(f, "new\n")
    assert f.read_text() == "new\n" and f.stat().st_mode & 0o777 == 0o600
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        write_private(tmp_path / "link", "k")  # not written through a link someone planted
    assert not (tmp_path / "elsewhere").exists()
