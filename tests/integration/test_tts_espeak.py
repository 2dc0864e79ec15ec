"""The offline TTS on an `espeak-ng` process: a fake one on PATH (a Python script, so the real
one is never required) renders 8 kHz mu-law from stdin, and a failing one falls back to the
clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mirror_bridge import audio
from mirror_bridge.tts import OfflineTTS, load_clip
from tests.conftest import run
from tests.support.audio import pcm

pytestmark = pytest.mark.integration


FAKE_ESPEAK = """#!{python}
import json, os, struct, sys
text = sys.stdin.read()
with open(os.environ["FAKE_ESPEAK_LOG"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "stdin": text}}) + "\\n")
if os.environ.get("FAKE_ESPEAK_EXIT"):
    sys.stderr.write("no voice data")
    sys.exit(int(os.environ["FAKE_ESPEAK_EXIT"]))
size = int(os.environ.get("FAKE_ESPEAK_SIZE", "0"))  # what a header written to a pipe holds
pcm = struct.pack("<h", 1000) * 11025  # 0.5 s at 22,050 Hz
fmt = struct.pack("<HHIIHH", 1, 1, 22050, 44100, 2, 16)
head = b"RIFF" + struct.pack("<I", size) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
sys.stdout.buffer.write(head + b"data" + struct.pack("<I", size) + pcm)
"""


@pytest.fixture
def fake_espeak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `espeak-ng` on PATH (and the only one): a script that logs its input and writes a
    0.5 s WAV to stdout with a pipe-style header."""
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "espeak-ng"
    script.write_text(FAKE_ESPEAK.format(python=sys.executable))
    script.chmod(0o755)
    log = tmp_path / "espeak.log"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_ESPEAK_LOG", str(log))
    monkeypatch.delenv("FAKE_ESPEAK_EXIT", raising=False)
    return log


def _calls(log: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("header_size", ["0", str(0xFFFFFFFF), str(0x7FFFF000)])
def test_espeak_on_path_renders_8k_mulaw_from_stdin(
    fake_espeak: Path, monkeypatch: pytest.MonkeyPatch, header_size: str
) -> None:
    monkeypatch.setenv("FAKE_ESPEAK_SIZE", header_size)
    tts = OfflineTTS()
    assert tts.engine == "espeak-ng" and tts.espeak == str(fake_espeak.parent / "bin/espeak-ng")
    out = run(tts.synthesize("-5 off, that's a medium.", "Matthew"))
    assert len(out) == 4000  # 0.5 s at 8 kHz, one byte a sample
    assert set(out) == {audio.lin2ulaw(pcm(1000))[0]}
    (call,) = _calls(fake_espeak)
    assert call["stdin"] == "-5 off, that's a medium."  # never an argument: no option injection
    assert call["argv"] == ["--stdout", "--stdin", "-v", "en-us+m3"]
    run(tts.synthesize("Hi.", "Salli"))  # a voice without an espeak mapping
    assert _calls(fake_espeak)[1]["argv"][-1] == "en-us"


def test_a_failing_espeak_falls_back_to_the_clips(
    fake_espeak: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FAKE_ESPEAK_EXIT", "2")
    tts = OfflineTTS()
    with caplog.at_level("WARNING"):
        out = run(tts.synthesize("Let me make sure I got that right.", "Joanna"))
    assert out == load_clip("let_me_make_sure_i_got_that_right")
    assert tts.fallbacks == 1 and "espeak-ng failed" in caplog.text
    assert len(_calls(fake_espeak)) == 1
