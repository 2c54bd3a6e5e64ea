"""The native kernel sources of ``kernels/``: where they are, and C++ ones built and bound with ctypes.

Where: the product's layout keeps the sources in the top-level ``kernels/`` folder beside the
``dlgsanet`` package; that is what ComfyUI, A1111 and an editable install run from. A wheel has no
such top level, so pyproject maps ``kernels/`` into the package as ``dlgsanet/kernels``. Which of the
two layouts this is, is one fact about the package folder, decided once (:func:`kernel_dir`);
``importlib.resources`` on ``dlgsanet.kernels`` would miss the hosts, which import ``dlgsanet`` (or
ComfyUI's ``<pack>.dlgsanet``) from a checkout where no such package exists.

Why plain C++ through ctypes rather than a PyTorch extension: it needs no PyTorch headers and no
build tools beyond a C++ compiler, and a missing or failing compiler costs nothing but speed
(build times in ``docs/performance.md``). A library is cached per source, compiler, flags, ABI
version and CPU under the user's cache folder, so later processes load it without compiling.
Every reason a library cannot be had is an :class:`~.optional.Unavailable` with a one-line text.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, Type

from .optional import Unavailable

CACHE_ENV_VAR = "DLGSANET_CACHE_DIR"
BUILD_TIMEOUT_S = 180
BASE_FLAGS = ("-O3", "-std=c++17", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math")

#: A function's ctypes (restype, argtypes), by its exported name.
Signatures = Mapping[str, Tuple[object, Sequence[object]]]


def kernel_dir() -> Path:
    """``dlgsanet/kernels`` in a wheel, else the checkout's top-level ``kernels/``."""
    package = Path(__file__).resolve().parents[1]  # dlgsanet/
    inside = package / "kernels"
    return inside if inside.is_dir() else package.parent / "kernels"


def kernel_file(name: str) -> Path:
    """Path of kernel source ``name``; FileNotFoundError (saying where it looked) when not shipped."""
    path = kernel_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found in {path.parent}")
    return path


def compiler() -> Optional[str]:
    """The C++ compiler: ``$CXX``, else the first of c++, g++, clang++ on the PATH."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def cache_dir() -> Path:
    """``$DLGSANET_CACHE_DIR``, else ``$XDG_CACHE_HOME/dlgsanet``, else ``~/.cache/dlgsanet``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "dlgsanet"


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU model and feature flags where the OS says them."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    parts.append(line.strip())
                if line.strip() == "":  # the first processor says it all
                    break
    except OSError:
        pass
    return "\n".join(parts)


def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def flag_sets() -> List[List[str]]:
    """Flags to try, best first: native ISA and OpenMP, then without one, then without both."""
    return [[*BASE_FLAGS, "-march=native", "-fopenmp"], [*BASE_FLAGS, "-fopenmp"],
            [*BASE_FLAGS, "-march=native"], list(BASE_FLAGS)]


def build(cxx: str, source: Path, folder: Path, abi_version: int) -> Path:
    """Compile ``source`` into ``folder`` (or reuse the cached build); the first flag set that
    compiles wins. Writes through a temporary file and an atomic rename, so processes that
    build at the same time never load a half-written library."""
    text = source.read_bytes()
    version = _compiler_version(cxx)
    identity = _cpu_identity()
    errors = []
    for flags in flag_sets():
        key = hashlib.sha256(b"\0".join([text, cxx.encode(), version.encode(), identity.encode(),
                                         " ".join(flags).encode(), str(abi_version).encode()])).hexdigest()[:20]
        target = folder / f"{source.stem}-{key}.so"
        if target.is_file():
            return target
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".so", dir=folder)
        os.close(fd)
        try:
            result = subprocess.run([cxx, *flags, "-o", tmp, str(source)], capture_output=True, text=True,
                                    timeout=BUILD_TIMEOUT_S)
            if result.returncode == 0:
                os.replace(tmp, target)
                return target
            lines = result.stderr.strip().splitlines() or ["?"]
            errors.append(f"{' '.join(flags)}: {next((l for l in lines if 'error' in l), lines[-1]).strip()}")
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{' '.join(flags)}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise Unavailable(f"{Path(cxx).name} could not build {source.name} ({'; '.join(errors)[:300]})")


def bind(path: Path, signatures: Signatures) -> ctypes.CDLL:
    """Load the library at ``path`` and declare its functions' ctypes types."""
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = list(argtypes)
    return lib


def load(source_name: str, signatures: Signatures, abi_version: int) -> Tuple[ctypes.CDLL, Path]:
    """Build (or find in the cache) and bind the C++ kernel source ``source_name``; returns the
    library and its file. Raises :class:`~.optional.Unavailable` with the reason it cannot."""
    if os.name != "posix":
        raise Unavailable(f"not built on {platform.system()} (GCC/clang vector extensions needed)")
    cxx = compiler()
    if cxx is None:
        raise Unavailable("no C++ compiler found (set CXX, or install g++ or clang++)")
    try:
        source = kernel_file(source_name)
    except FileNotFoundError as exc:
        raise Unavailable(str(exc)) from None
    folders = [cache_dir(), Path(tempfile.gettempdir()) / f"dlgsanet-{os.getuid()}"]
    last: Optional[Exception] = None
    for folder in folders:
        try:
            path = build(cxx, source, folder, abi_version)
            break
        except OSError as exc:  # cache folder not writable: try the next one
            last = exc
    else:
        raise Unavailable(f"no writable cache folder for the kernels ({last})")
    try:
        return bind(path, signatures), path
    except OSError:  # a damaged cached file: build it again, once
        path.unlink(missing_ok=True)
        path = build(cxx, source, path.parent, abi_version)
        return bind(path, signatures), path


class LoadedOnce:
    """A native library built, loaded and checked on first use, or the one-line reason it cannot be.

    Why one holder for every optional library: a failed build is slow, so it is tried once per
    process (until :meth:`reset`); the answer must be the same from any thread; and no failure
    may break the work the library only speeds up, so every exception becomes ``unavailable``.
    """

    def __init__(self, load: Callable[[], ctypes.CDLL], unavailable: Type[Unavailable]) -> None:
        self._load, self._unavailable = load, unavailable
        self._lock = threading.RLock()  # a self-check may call the kernels through get() while loading
        self._lib: Optional[ctypes.CDLL] = None
        self._reason: Optional[str] = None

    def get(self) -> ctypes.CDLL:
        """The library; raises ``unavailable`` with the reason when it cannot be had."""
        with self._lock:
            if self._lib is None and self._reason is None:
                try:
                    self._lib = self._load()
                except Unavailable as exc:
                    self._lib, self._reason = None, str(exc)
                except Exception as exc:  # noqa: BLE001 - an accelerator must never break the work
                    self._lib, self._reason = None, f"{type(exc).__name__}: {exc}"
            if self._lib is None:
                raise self._unavailable(self._reason)
            return self._lib

    def provide(self, lib: ctypes.CDLL) -> None:
        """While loading: let a self-check reach ``lib`` through :meth:`get` (undone if it fails)."""
        self._lib = lib

    def reset(self) -> None:
        """Forget the library and the reason (tests; a host after installing a compiler)."""
        with self._lock:
            self._lib = self._reason = None
