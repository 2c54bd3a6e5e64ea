"""Videos through ``dlgsanet upscale``: frames, timing, audio, equality with the image path, streaming,
interrupts and damaged files. Clips are made here with PyAV (the ``video`` extra; CI installs it)."""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT
from core_helpers import random_model, small_config
from dlgsanet import save_model
from dlgsanet.cli import main

av = pytest.importorskip("av", reason="PyAV is not installed (pip install 'dlgsanet[video]'); CI installs it")

NTSC = Fraction(24000, 1001)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "small_x2.safetensors"
    save_model(random_model(small_config(scale=2)), path)
    return path


def make_clip(path: Path, frames: int = 8, size: tuple[int, int] = (24, 32), rate: Fraction = NTSC,
              pts: list[int] | None = None, pix_fmt: str = "yuv420p", audio: bool = True) -> Path:
    """A lossless H.264 clip of random frames (``pts`` in 1/rate units, default 0..n-1) with a mono
    AAC tone lasting as long as the video."""
    h, w = size
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = w, h, pix_fmt
        video.codec_context.options = {"crf": "0"}
        sound = out.add_stream("aac", rate=48000) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for i, t in enumerate(pts or range(frames)):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), format="rgb24")
            frame.pts = t
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None:
            seconds = float(((pts or [frames - 1])[-1] + 1) / rate)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(48000 * seconds)) / 48000)).astype(np.float32)
            chunk = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, 0
            for packet in [*sound.encode(chunk), *sound.encode(None)]:
                out.mux(packet)
    return path


def decoded(path: Path) -> tuple[list[np.ndarray], list[Fraction], object]:
    """RGB frames, their presentation times in seconds, and the video stream's facts."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        facts = argparse.Namespace(rate=s.guessed_rate, pix_fmt=s.codec_context.pix_fmt,
                                   size=(s.codec_context.height, s.codec_context.width))
        frames, times = [], []
        for f in c.decode(s):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(f.pts * f.time_base)
    return frames, times, facts


def audio_packets(path: Path) -> tuple[str, list[tuple[int, bytes]]]:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        name = s.codec_context.name
        packets = [(float(p.pts * p.time_base), bytes(p)) for p in c.demux(s) if p.size]
    return name, packets


def test_clip_keeps_frames_rate_and_audio_and_equals_single_images(model_file, tmp_path) -> None:
    clip = make_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out.mp4"  # MP4 stores the input's 1/24000 time base (Matroska rounds to ms)
    # libx264rgb at crf 0 is lossless RGB: what the model produced is what we decode back.
    assert main(["upscale", str(clip), "-o", str(out), "--model", str(model_file), "--codec", "libx264rgb",
                 "--crf", "0", "--batch", "3", "--quiet"]) == 0
    src_frames, src_times, src = decoded(clip)
    out_frames, out_times, dst = decoded(out)
    assert len(out_frames) == len(src_frames) == 8
    assert dst.size == (48, 64) and dst.rate == NTSC == src.rate
    assert out_times == src_times
    assert audio_packets(out) == audio_packets(clip)  # same codec, every packet copied unchanged

    # The image path on the same decoded frames, one by one, as PNGs.
    from PIL import Image

    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, frame in enumerate(src_frames):
        Image.fromarray(frame).save(frames_dir / f"{i:03d}.png")
    assert main(["upscale", str(frames_dir), "-o", str(tmp_path / "pngs"), "--model", str(model_file),
                 "--quiet"]) == 0
    for i, frame in enumerate(out_frames):
        single = np.asarray(Image.open(tmp_path / "pngs" / f"{i:03d}.png")).astype(int)
        diff = np.abs(frame.astype(int) - single)
        # Three frames share one forward pass here; the CPU kernels may then add in another order
        # (float32 differences of ~1e-6), which moves a value lying on a rounding boundary by one
        # level. Nothing else differs: the codec is lossless and both paths round x*255 alike.
        assert diff.max() <= 1, f"frame {i}: {diff.max()} levels off the single-image result"
        assert (diff == 0).mean() > 0.99


def test_variable_frame_rate_and_pixel_format_are_kept(model_file, tmp_path) -> None:
    pts = [0, 1, 3, 4, 8, 9, 10, 15]  # irregular gaps: a variable frame rate
    clip = make_clip(tmp_path / "vfr.mp4", pts=pts, pix_fmt="yuv444p")
    out = tmp_path / "out" / "vfr.mp4"
    assert main(["upscale", str(clip), "-o", str(out), "--model", str(model_file), "--quiet"]) == 0
    _, src_times, _ = decoded(clip)
    out_frames, out_times, dst = decoded(out)
    assert len(out_frames) == 8 and out_times == src_times
    assert dst.pix_fmt == "yuv444p" and dst.size == (48, 64)
    assert audio_packets(out) == audio_packets(clip)


def test_odd_output_size_is_made_even_for_yuv420p(model_file, tmp_path, capsys) -> None:
    clip = make_clip(tmp_path / "clip.mp4", audio=False)
    out = tmp_path / "fit.mp4"
    # Fitting 32x24 inside 45x33 gives 44x33; yuv420p needs even sides, so 44x32.
    assert main(["upscale", str(clip), "-o", str(out), "--model", str(model_file), "--size", "45x33"]) == 0
    frames, _, dst = decoded(out)
    assert dst.size == (32, 44) and dst.pix_fmt == "yuv420p" and len(frames) == 8
    assert "44x32 instead of 44x33" in capsys.readouterr().err


def test_frames_are_streamed_in_batches(model_file, tmp_path) -> None:
    """At most --batch decoded frames are held at once, and results leave before the clip is read."""
    from dlgsanet import load_model
    from dlgsanet.cli.upscale_video import batch_runner
    from dlgsanet.video import upscale_frames

    clip = make_clip(tmp_path / "long.mp4", frames=10, audio=False)
    model = load_model(str(model_file))
    args = argparse.Namespace(tile=None, overlap=None, border="mirror")
    read = 0

    def counted(frames):
        nonlocal read
        for frame in frames:
            read += 1
            yield frame

    with av.open(str(clip)) as c:
        held_at_output, written = [], 0
        for _, array in upscale_frames(counted(c.decode(video=0)), batch_runner(model, args, (48, 64)), 3):
            held_at_output.append(read - written)
            written += 1
            assert array.shape == (48, 64, 3)
    assert written == 10
    assert max(held_at_output) <= 3
    assert held_at_output[0] == 3  # the first result came after 3 of the 10 frames were read


def test_damaged_videos_are_reported_and_the_rest_is_done(model_file, tmp_path, capsys) -> None:
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "good.mp4")
    whole = make_clip(tmp_path / "whole.mp4").read_bytes()
    (src / "cut.mp4").write_bytes(whole[: len(whole) // 2])  # the index (moov) is at the end: gone
    (src / "noise.mkv").write_bytes(np.random.default_rng(1).bytes(5000))
    Image.fromarray(np.zeros((9, 13, 3), np.uint8)).save(src / "still.png")
    out = tmp_path / "out"
    assert main(["upscale", str(src), "-o", str(out), "--model", str(model_file), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "cut.mp4" in err and "noise.mkv" in err
    assert sorted(p.name for p in out.iterdir()) == ["good.mp4", "still.png"]  # no partial files
    assert len(decoded(out / "good.mp4")[0]) == 8


def test_interrupt_leaves_no_partial_video(model_file, tmp_path) -> None:
    clip = make_clip(tmp_path / "long.mp4", frames=400, audio=False)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "dlgsanet", "upscale", str(clip), "-o", str(out / "x.mp4"),
                             "--model", str(model_file), "--batch", "1", "--threads", "1", "--quiet"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            # a test run started in the background (`cmd &` in a script) ignores
                            # SIGINT, and Python keeps an ignored SIGINT ignored: give it Ctrl-C back
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not (out.is_dir() and any(p.stat().st_size > 0 for p in out.iterdir())):
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "no temporary output appeared within 60 s"
            time.sleep(0.05)
        time.sleep(0.3)  # a few frames in
        assert proc.poll() is None, "the run finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert list(out.iterdir()) == []


def test_video_input_needs_a_video_output_name(model_file, tmp_path, capsys) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=2, audio=False)
    assert main(["upscale", str(clip), "-o", str(tmp_path / "x.png"), "--model", str(model_file)]) == 2
    assert "is a video" in capsys.readouterr().err
    assert main(["upscale", str(clip), "-o", str(tmp_path / "x.mp4"), "--crf", "99"]) == 2
    assert "--crf" in capsys.readouterr().err
    assert main(["upscale", str(clip), "-o", str(tmp_path / "x.mp4"), "--codec", "nosuch"]) == 2
    assert "--codec nosuch" in capsys.readouterr().err
