"""compare and convert end in one line with the usual exit codes (2 bad input or an unwritable
folder, 130 Ctrl-C, 1 other failures), and no command prints a hub token."""

import errno
import json

import pytest

from mlx_clip import compare, convert, fetch
from mlx_clip.errors import InputError, error_line, scrub_tokens
from mlx_clip.run import compare_runs as run_compare

TOKEN = "hf_" + "Ab3" * 11 + "x"  # 34 characters after hf_, as the hub's tokens are


def _one_line(err: str) -> None:
    assert err.startswith("error: ") or err.startswith("interrupted"), err
    assert err.count("\n") == 1 and "Traceback" not in err, err


def test_compare_out_on_a_read_only_folder_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_compare, "compare", lambda folders: {"runs": []})
    monkeypatch.setattr(run_compare, "text_table", lambda result: "table")

    def read_only(path, data):
        raise PermissionError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(run_compare, "write_json", read_only)
    assert compare.main(["a", "b", "--out", str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert "Read-only file system" in err and str(tmp_path / "ro") in err


def test_compare_out_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_compare, "compare", lambda folders: {"runs": []})
    monkeypatch.setattr(run_compare, "text_table", lambda result: "table")
    (tmp_path / "taken").write_text("a file")
    assert compare.main(["a", "b", "--out", str(tmp_path / "taken" / "out")]) == 1
    _one_line(capsys.readouterr().err)


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _exit_code(main, argv):
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped as a traceback")


def test_ctrl_c_in_compare_and_convert_is_one_line_and_130(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(compare, "main_compare", _interrupt)
    assert _exit_code(compare.main, ["a", "b"]) == 130
    _one_line(capsys.readouterr().err)
    monkeypatch.setattr(convert, "load", _interrupt)
    assert _exit_code(convert.main, ["--hf-path", "x", "--mlx-path", str(tmp_path / "out")]) == 130
    _one_line(capsys.readouterr().err)


def test_no_command_prints_a_hub_token(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "a-token-of-another-shape-123")
    folder = tmp_path / f"{TOKEN}-a-token-of-another-shape-123"
    assert convert.main(["--hf-path", str(folder), "--mlx-path", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    _one_line(err)
    assert TOKEN not in err and "a-token-of-another-shape-123" not in err and "no such model folder" in err
    records = tmp_path / f"records-{TOKEN}.json"
    assert fetch.main([str(records), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert TOKEN not in err and "hf_***" in err


@pytest.mark.parametrize("text", [
    f"HTTP 401 for url https://example.org/?token={TOKEN}",
    "request headers: {'Authorization': 'Bearer sk-live-1234567890abcdef'}",
    "Authorization: Bearer abcdefgh12345678",
    "authorization=token ghp_abcdefghijklmnop",
])
def test_scrubbing_covers_token_shapes_and_authorization_headers(text):
    for shown in (scrub_tokens(text), str(InputError(text)), error_line(RuntimeError(text))):
        for secret in (TOKEN, "sk-live-1234567890abcdef", "abcdefgh12345678", "ghp_abcdefghijklmnop"):
            assert secret not in shown, shown


def test_scrubbing_leaves_ordinary_text_alone():
    text = json.dumps({"id": "hf_short", "caption": "an authorization letter, Roman"})
    assert scrub_tokens(text) == text


def _ascii_console(monkeypatch):
    """stdout and stderr as a console that can only encode ASCII (a Windows or LANG=C terminal)."""
    import io
    import sys

    streams = [io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict") for _ in range(2)]
    monkeypatch.setattr(sys, "stdout", streams[0])
    monkeypatch.setattr(sys, "stderr", streams[1])
    return streams


def test_the_command_runner_prints_what_the_console_cannot_encode_escaped(monkeypatch):
    from mlx_clip.command import run_command

    out, err = _ascii_console(monkeypatch)
    assert run_command(lambda: print("Vase \ud83d, Krug \u00e9")) == 0  # a title cut inside an emoji
    assert run_command(lambda: (_ for _ in ()).throw(InputError("records.jsonl, record 3: title 'Krug \u00e9'"))) == 2
    out.flush(), err.flush()
    assert out.buffer.getvalue() == b"Vase \\ud83d, Krug \\xe9\n"
    assert err.buffer.getvalue() == b"error: records.jsonl, record 3: title 'Krug \\xe9'\n"
    assert out.errors == err.errors == "strict"  # given back as it was, for in-process callers


def test_a_command_under_an_ascii_console_prints_escaped_and_exits_0(tiny_hf, tmp_path):
    """The real console: `python -m mlx_clip convert` writes to a folder named with an accent."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONIOENCODING="ascii", PYTHONPATH=str(root))
    out = tmp_path / "mod\u00e8le"
    done = subprocess.run([sys.executable, "-m", "mlx_clip", "convert", "--from", str(tiny_hf), "--to", str(out)],
                          capture_output=True, env=env, cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr.decode("ascii", "replace")
    assert b"wrote " + str(tmp_path).encode() + b"/mod\\xe8le (" in done.stdout
    assert b"Traceback" not in done.stderr
