"""A minimal WebSocket client and a headless Chromium driven over the DevTools protocol.

Standard library only, so the real-host tests run in the project's own environment without a
browser-driver package: ComfyUI's ``/ws`` progress messages are read with :class:`WebSocket`,
and :class:`Chromium` loads ComfyUI's frontend, runs JavaScript in it and takes screenshots
(the DevTools endpoint is itself a WebSocket). Only what those tests need of RFC 6455 and CDP.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Optional

CHROMIUM = Path(os.environ.get("DLGSANET_CHROMIUM", "/usr/bin/chromium"))
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocket:
    """A blocking client WebSocket (``ws://`` only): text/binary messages, ping answered."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "ws":
            raise ValueError(f"only ws:// URLs are supported, got {url}")
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:  # byte by byte: nothing of the first frame is consumed
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError(f"{url}: connection closed during the handshake")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"{url}: handshake refused: {status.decode(errors='replace')}")
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        if accept.encode() not in head:
            raise ConnectionError(f"{url}: wrong Sec-WebSocket-Accept")
        self._buf = b""

    def settimeout(self, seconds: Optional[float]) -> None:
        self.sock.settimeout(seconds)

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionError("WebSocket closed by the server")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._read(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        mask = self._read(4) if b1 & 0x80 else None
        payload = self._read(length)
        if mask:
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv(self) -> tuple[int, bytes]:
        """The next data message as (opcode, payload); raises ConnectionError on close."""
        opcode, parts = None, []
        while True:
            fin, op, payload = self._frame()
            if op == PING:
                self.send(payload, PONG)
                continue
            if op == PONG:
                continue
            if op == CLOSE:
                raise ConnectionError("WebSocket closed by the server")
            if op != 0:
                opcode = op
            parts.append(payload)
            if fin:
                return int(opcode or TEXT), b"".join(parts)

    def recv_json(self) -> Any:
        """The next text message, parsed (binary messages, e.g. previews, are skipped)."""
        while True:
            op, payload = self.recv()
            if op == TEXT:
                return json.loads(payload)

    def send(self, data: "bytes | str", opcode: int = TEXT) -> None:
        payload = data.encode() if isinstance(data, str) else data
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))

    def close(self) -> None:
        try:
            self.send(b"", CLOSE)
        except OSError:
            pass
        self.sock.close()


class JavaScriptError(AssertionError):
    pass


class Chromium:
    """Real headless Chromium (Debian's package) with one page, driven over DevTools."""

    FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1600,1000")

    def __init__(self, executable: Path = CHROMIUM, timeout: float = 90.0) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="dlgsanet-chromium-"))
        self.log_path = self.profile.parent / (self.profile.name + ".log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(executable), *self.FLAGS, f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.quit()
                raise AssertionError(f"Chromium did not start:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            targets = json.loads(r.read())
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = WebSocket(page["webSocketDebuggerUrl"], timeout=timeout)
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.console: list[str] = []
        for domain in ("Page", "Runtime"):
            self.call(f"{domain}.enable")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def version(self) -> str:
        return self.call("Browser.getVersion")["product"]

    def call(self, method: str, timeout: float = 120.0, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and wait for its answer (events are kept meanwhile)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            msg = self.ws.recv_json()
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict[str, Any]) -> None:
        self.events.append(msg)
        if msg.get("method") == "Runtime.consoleAPICalled":
            args = msg["params"].get("args", [])
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
            self.console.append(f"{msg['params'].get('type')}: {text}")
        elif msg.get("method") == "Runtime.exceptionThrown":
            details = msg["params"]["exceptionDetails"]
            self.console.append("exception: " + str(details.get("exception", {}).get("description")
                                                    or details.get("text")))

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def js(self, expression: str, timeout: float = 120.0) -> Any:
        """Evaluate ``expression`` in the page (promises awaited) and return its JSON value."""
        result = self.call("Runtime.evaluate", timeout=timeout, expression=expression,
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            d = result["exceptionDetails"]
            raise JavaScriptError(str(d.get("exception", {}).get("description") or d.get("text")))
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120.0, what: str = "") -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        value, error = None, None
        while time.monotonic() < deadline:
            try:
                value, error = self.js(expression), None
            except JavaScriptError as e:  # e.g. the page is still loading
                value, error = None, e
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout}s waiting for {what or expression!r}"
                             f" (last JavaScript error: {error}); console:\n" + "\n".join(self.console[-30:]))

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def quit(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def chromium_version(executable: Path = CHROMIUM) -> str:
    out = subprocess.run([str(executable), "--version"], capture_output=True, text=True, timeout=60)
    return re.sub(r"\s+", " ", out.stdout).strip()
