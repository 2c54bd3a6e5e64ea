"""Stand-in for A1111 1.10 ``modules/util.py``: ``natural_sort_key`` and ``walk_files``.

``walk_files`` walks recursively following links, in natural order, filters extensions in lower
case, and skips files under hidden folders unless ``opts.list_hidden_files``.
"""
from __future__ import annotations

import os
import re

from modules import shared


def natural_sort_key(s: str, regex=re.compile("([0-9]+)")):
    return [int(text) if text.isdigit() else text.lower() for text in regex.split(s)]


def walk_files(path, allowed_extensions=None):
    if not os.path.exists(path):
        return
    if allowed_extensions is not None:
        allowed_extensions = set(allowed_extensions)
    items = sorted(os.walk(path, followlinks=True), key=lambda x: natural_sort_key(x[0]))
    for root, _, files in items:
        for filename in sorted(files, key=natural_sort_key):
            if allowed_extensions is not None:
                _, ext = os.path.splitext(filename)
                if ext.lower() not in allowed_extensions:
                    continue
            if not shared.opts.list_hidden_files and ("/." in root or "\\." in root):
                continue
            yield os.path.join(root, filename)
