"""Videos through the upscaler, streaming: decode, upscale in batches of frames, encode as they come.

Why PyAV (an optional extra, ``pip install dlgsanet[video]``): it bundles FFmpeg, so every
common container and codec is read and written without an ffmpeg binary on the PATH, and its
packets can be copied between containers, which keeps audio exactly as it was (remuxed, never
re-encoded).

Memory is bounded by the batch, not the clip: :func:`upscale_frames` holds at most ``batch``
decoded frames, upscales them and hands the results on before it reads more. Timing is kept
frame by frame (each output frame carries its input frame's timestamp in the input stream's
time base), so rational and variable frame rates survive; the frame count is the decoded one.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from .errors import DLGSANetError

#: Video containers the upscale command reads and writes (image suffixes live in dlgsanet.images).
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm", ".avi")
#: Video codecs a WebM file may hold (the container refuses others); the default for .webm.
WEBM_CODECS = ("libvpx-vp9", "libvpx", "libsvtav1", "libaom-av1", "av1")
DEFAULT_CRF = 18
INSTALL_HINT = "reading and writing videos needs PyAV: pip install 'dlgsanet[video]' (or pip install av)"

#: [B,3,H,W] float 0..1 on the CPU -> [B,3,H',W'] float 0..1 (the upscaled frames).
BatchRunner = Callable[[torch.Tensor], torch.Tensor]


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def require_av():
    """The ``av`` module, or one clear error saying how to get it."""
    try:
        import av
    except ImportError:
        raise DLGSANetError(INSTALL_HINT) from None
    return av


@dataclass
class VideoInfo:
    """What planning needs from a video, read from its header (no frame is decoded)."""

    height: int
    width: int
    frames: int                    # 0 when the container does not say
    pix_fmt: str
    rate: Optional[Fraction]
    audio: list[str] = field(default_factory=list)


def probe(path: Path) -> Optional[VideoInfo]:
    """The video's first video stream, or None when it cannot be read (reported when it is run)."""
    av = require_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            s = container.streams.video[0]
            return VideoInfo(s.codec_context.height, s.codec_context.width, int(s.frames or 0),
                             s.codec_context.pix_fmt or "yuv420p", s.guessed_rate or s.average_rate,
                             [a.codec_context.name for a in container.streams.audio])
    except Exception:  # noqa: BLE001 - any failure is reported when the file is upscaled
        return None


def default_codec(suffix: str) -> str:
    """libx264 where the bundled FFmpeg has it (mpeg4 otherwise); VP9 for WebM."""
    av = require_av()
    names = WEBM_CODECS if suffix.lower() == ".webm" else ("libx264", "mpeg4")
    for name in names:
        if name in av.codecs_available:
            return name
    raise DLGSANetError(f"this PyAV build has no encoder for {suffix} files (tried {', '.join(names)}); "
                        f"choose one with --codec")


def check_codec(name: str) -> None:
    """``--codec``: an FFmpeg video encoder PyAV has."""
    av = require_av()
    try:
        codec = av.Codec(name, "w")
    except Exception:  # noqa: BLE001 - unknown names raise various errors
        raise DLGSANetError(f"--codec {name}: no such video encoder in this PyAV build; try libx264, "
                            f"libx265, libvpx-vp9, ffv1 or mpeg4") from None
    if codec.type != "video":
        raise DLGSANetError(f"--codec {name} is a {codec.type} codec; give a video encoder such as libx264")


def _depth(fmt_name: str) -> int:
    av = require_av()
    return max(c.bits for c in av.VideoFormat(fmt_name).components)


def _subsampling(fmt_name: str) -> tuple[int, int]:
    """(vertical, horizontal) multiple a frame size must be of for this pixel format."""
    av = require_av()
    fmt = av.VideoFormat(fmt_name, 64, 64)
    comps = fmt.components
    if len(comps) < 3 or fmt.is_rgb:
        return 1, 1
    return max(1, 64 // comps[1].height), max(1, 64 // comps[1].width)


def choose_pix_fmt(codec_name: str, source: str) -> str:
    """The input's pixel format when the encoder takes it, else the nearest it has.

    Order: the source format; for RGB sources full-chroma YUV (4:4:4); for deep (>8-bit) sources
    a 10-bit one; yuv420p; an RGB one (lossless RGB codecs such as libx264rgb); the encoder's first.
    """
    av = require_av()
    formats = [f.name for f in (av.Codec(codec_name, "w").video_formats or [])]
    if not formats:
        return source
    wanted = [source]
    deep, rgb = _depth(source) > 8, av.VideoFormat(source).is_rgb
    if rgb:
        wanted += ["yuv444p10le", "yuv444p"] if deep else ["yuv444p"]
    if deep:
        wanted.append("yuv420p10le")
    wanted += ["yuv420p", "rgb24", "bgr24", "gbrp", "bgr0"]
    return next((f for f in wanted if f in formats), formats[0])


def even_size(size: tuple[int, int], pix_fmt: str) -> tuple[int, int]:
    """(height, width) rounded down to what ``pix_fmt``'s chroma subsampling needs (yuv420p: even)."""
    my, mx = _subsampling(pix_fmt)
    return max(my, size[0] - size[0] % my), max(mx, size[1] - size[1] % mx)


def frame_to_tensor(frame, deep: bool) -> torch.Tensor:
    """[3,H,W] float32 in 0..1; 16-bit RGB for sources deeper than 8 bits."""
    rgb = frame.reformat(format="rgb48le" if deep else "rgb24", src_color_range=frame.color_range).to_ndarray()
    top = 65535.0 if deep else 255.0
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(top)


def tensor_to_array(x: torch.Tensor, deep: bool) -> np.ndarray:
    """[3,H,W] float 0..1 -> HxWx3 uint8 (uint16 when deep), rounded as PNG outputs are."""
    top = 65535.0 if deep else 255.0
    arr = (x.detach().float().clamp(0, 1) * top).round().cpu().numpy()
    return np.ascontiguousarray(arr.astype(np.uint16 if deep else np.uint8).transpose(1, 2, 0))


def upscale_frames(frames: Iterable, run_batch: BatchRunner, batch: int, deep: bool = False
                   ) -> Iterator[tuple[object, np.ndarray]]:
    """(input frame, upscaled HxWx3 array) for each frame, in order, ``batch`` frames at a time.

    At most ``batch`` input frames are held: each batch is upscaled and all its results are
    handed on before the next frame is read.
    """
    held: list = []

    def flush() -> Iterator[tuple[object, np.ndarray]]:
        x = torch.stack([frame_to_tensor(f, deep) for f in held])
        out = run_batch(x)
        del x
        for k, f in enumerate(held):
            yield f, tensor_to_array(out[k], deep)

    for frame in frames:
        held.append(frame)
        if len(held) >= batch:
            yield from flush()
            held = []
    if held:
        yield from flush()


class VideoWriter:
    """An output video written to a hidden temporary file beside ``dst``, renamed on success.

    Video is encoded with ``codec`` and ``crf`` at ``pix_fmt``, timestamps in ``time_base``, with the
    codec-context attributes in ``colour`` (colour tags, sample aspect ratio) copied from the input;
    audio streams are copied from ``audio`` (input streams) packet by packet.
    """

    def __init__(self, dst: Path, *, codec: str, crf: Optional[int], pix_fmt: str, size: tuple[int, int],
                 rate: Optional[Fraction], time_base: Fraction, colour: dict, audio: list,
                 overwrite: bool) -> None:
        av = require_av()
        self.dst, self.overwrite = dst, overwrite
        if dst.exists() and not overwrite:
            raise DLGSANetError(f"{dst} already exists (use --overwrite to replace it)")
        self.tmp = dst.with_name(f".{dst.stem}.{os.getpid()}-{secrets.token_hex(4)}.partial{dst.suffix}")
        self.out = av.open(str(self.tmp), "w")
        try:
            supported = self.out.supported_codecs
            if supported and codec not in supported:
                raise DLGSANetError(f"{dst.suffix} files cannot hold {codec} video; choose another "
                                    f"--codec or output (.mkv holds any codec)")
            self.video = self.out.add_stream(codec, rate=rate)
            ctx = self.video.codec_context
            ctx.height, ctx.width = size
            ctx.pix_fmt = pix_fmt
            ctx.time_base = time_base
            self.video.time_base = time_base
            for name, value in colour.items():
                if value is not None:
                    setattr(ctx, name, value)
            ctx.options = _quality_options(codec, crf, ctx)
            self.audio = {}
            for stream in audio:
                name = stream.codec_context.name
                if supported and name not in supported:
                    raise DLGSANetError(f"its audio ({name}) cannot be copied into a {dst.suffix} file; "
                                        f"write a .mkv (it holds any audio) or a container that takes {name}")
                self.audio[stream.index] = self.out.add_stream_from_template(stream)
        except BaseException:
            self.abort()
            raise

    def encode(self, frame) -> None:
        for packet in self.video.encode(frame):
            self.out.mux(packet)

    def copy(self, packet) -> None:
        """An audio packet of the input, remuxed unchanged (flush packets have no dts: skipped)."""
        if packet.dts is None or packet.size == 0:
            return
        packet.stream = self.audio[packet.stream.index]
        self.out.mux(packet)

    def finish(self) -> Path:
        for packet in self.video.encode(None):
            self.out.mux(packet)
        self.out.close()
        if self.dst.exists() and not self.overwrite:
            self.abort()
            raise DLGSANetError(f"{self.dst} appeared while it was written; it was left alone")
        os.replace(self.tmp, self.dst)
        return self.dst

    def abort(self) -> None:
        """Close and delete the temporary file (interrupt, damaged input, full disk)."""
        try:
            self.out.close()
        except Exception:  # noqa: BLE001 - closing a half-written file can fail; it is deleted anyway
            pass
        if self.tmp.exists():
            self.tmp.unlink()


def _quality_options(codec: str, crf: Optional[int], ctx) -> dict:
    """Encoder options for ``--crf``: crf where the encoder has it (VP9 needs b=0 for pure CRF)."""
    if crf is None:
        return {}
    try:
        names = {o.name for o in ctx.supported_options.private}
    except AttributeError:  # older PyAV: no option list; try crf and let the encoder ignore it
        names = {"crf"}
    if "crf" in names:
        return {"crf": str(crf), **({"b": "0"} if codec.startswith("libvpx") else {})}
    if codec == "mpeg4":  # no CRF: a fixed quantiser, mapped from the CRF scale (18 -> 3)
        ctx.qscale = True
        ctx.global_quality = 118 * max(1, min(31, round(crf / 6)))
    return {}


def open_input(path: Path):
    """The opened container and its first video stream (a clear error when there is none)."""
    av = require_av()
    try:
        container = av.open(str(path))
    except Exception as e:  # noqa: BLE001 - FFmpeg's many error types: all mean "cannot read"
        reason = getattr(e, "strerror", None) or (str(e).splitlines()[0] if str(e).strip() else type(e).__name__)
        raise DLGSANetError(f"{path}: cannot read this video ({reason}); is it damaged or incomplete?") from None
    if not container.streams.video:
        container.close()
        raise DLGSANetError(f"{path}: has no video stream")
    return container, container.streams.video[0]


def decoded_frames(container, vstream, writer: VideoWriter) -> Iterator:
    """Decoded video frames in order; audio packets met on the way go straight to ``writer``."""
    vstream.thread_type = "AUTO"
    audio = [s for s in container.streams.audio if s.index in writer.audio]
    for packet in container.demux(vstream, *audio):
        if packet.stream.index == vstream.index:
            yield from packet.decode()
        else:
            writer.copy(packet)


def output_frame(array: np.ndarray, src_frame, fallback_pts: int, time_base: Fraction, pix_fmt: str,
                 colour: dict):
    """An encoder-ready frame of ``array`` with ``src_frame``'s timestamp, in the output format."""
    av = require_av()
    frame = av.VideoFrame.from_ndarray(array, format="rgb48le" if array.dtype == np.uint16 else "rgb24")
    frame = frame.reformat(format=pix_fmt, dst_colorspace=colour.get("colorspace"),
                           dst_color_range=colour.get("color_range"))
    frame.pts = src_frame.pts if src_frame.pts is not None else fallback_pts
    frame.time_base = time_base
    return frame
