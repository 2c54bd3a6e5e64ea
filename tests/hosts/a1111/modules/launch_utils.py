"""Stand-in for A1111 1.10 ``modules/launch_utils.py``: the helpers an ``install.py`` uses.

``args`` is the launcher's parse of the command line (known args only). ``is_installed(name)``
accepts a distribution *or* a module name. ``run_pip`` returns None without doing anything under
``--skip-install``; the stand-in never runs pip: it records the command in ``pip_calls``.
``$A1111_STANDIN_PIP_LOG`` names a file that receives one line per pip command (stand-in only,
so a test can see what an ``install.py`` subprocess asked for). ``run_extension_installer`` runs ``install.py`` in a subprocess with the webui root prepended to
PYTHONPATH and reports (never raises) a failure.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys

from modules import cmd_args, errors
from modules.paths_internal import script_path

args, _ = cmd_args.parser.parse_known_args()
python = sys.executable
index_url = os.environ.get("INDEX_URL", "")
pip_calls: list[str] = []  # stand-in only


def run(command: str, desc=None, errdesc=None, custom_env=None, live: bool = False) -> str:
    if desc is not None:
        print(desc)
    result = subprocess.run(command, shell=True, env=os.environ if custom_env is None else custom_env,
                            encoding="utf8", errors="ignore", capture_output=not live)
    if result.returncode != 0:
        raise RuntimeError("\n".join([f"{errdesc or 'Error running command'}.", f"Command: {command}",
                                      f"Error code: {result.returncode}", f"stdout: {result.stdout}",
                                      f"stderr: {result.stderr}"]))
    return result.stdout or ""


def is_installed(package: str) -> bool:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            return False
        return spec is not None
    return dist is not None


def run_pip(command: str, desc=None, live: bool = False):
    if args.skip_install:
        return None
    index_url_line = f" --index-url {index_url}" if index_url != "" else ""
    call = f"-m pip {command} --prefer-binary{index_url_line}"
    pip_calls.append(call)
    log = os.environ.get("A1111_STANDIN_PIP_LOG")
    if log:
        with open(log, "a", encoding="utf8") as f:
            f.write(call + "\n")
    return ""


def run_extension_installer(extension_dir: str) -> None:
    path_installer = os.path.join(extension_dir, "install.py")
    if not os.path.isfile(path_installer):
        return
    try:
        env = os.environ.copy()
        env["PYTHONPATH"] = f"{script_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
        stdout = run(f'"{python}" "{path_installer}"', errdesc=f"Error running install.py for extension {extension_dir}",
                     custom_env=env).strip()
        if stdout:
            print(stdout)
    except Exception as e:
        errors.report(str(e))
