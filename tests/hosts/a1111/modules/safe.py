"""Stand-in for A1111 1.10.1 ``modules/safe.py``: the webui's replacement of ``torch.load``.

Written from the real file's behaviour (not copied). ``load(filename, ...)`` first checks the file
and returns **None** (after an ``errors.report``) when the check fails, unless
``--disable-safe-unpickle``; otherwise it calls the original ``torch.load``:

* a zip archive passes only when every entry matches
  ``<dir>/(data/<n>|version|byteorder|.data/serialization_id|data.pkl)``. torch >= 2.5 also
  writes ``.format_version`` and ``.storage_alignment``, so every file a current torch saves is
  refused ("bad file inside ...");
* ``data.pkl`` (or, for a non-zip file, the five legacy pickles) is unpickled with an allow-list
  of globals (OrderedDict, ``torch._utils._rebuild_tensor_v2/_rebuild_parameter``, a few
  storage types, some numpy names, ...); anything else raises "global '<module>/<name>' is
  forbidden".

The real module does ``torch.load = load`` when it is imported (``modules/paths.py`` imports it
early in every start); Forge's copy has that line commented out. The stand-in leaves the swap to
:func:`install` (``a1111_helpers.use_a1111_torch_load``), so a test process gets its own
``torch.load`` back after each test.
"""
from __future__ import annotations

import collections
import pickle
import re
import zipfile

import torch

from modules import errors

_ALLOWED_NAMES = re.compile(r"^([^/]+)/((data/\d+)|version|byteorder|.data/serialization_id|(data\.pkl))$")
_STORAGES = {"FloatStorage", "HalfStorage", "IntStorage", "LongStorage", "DoubleStorage", "ByteStorage",
             "float32", "BFloat16Storage"}


class RestrictedUnpickler(pickle.Unpickler):
    def persistent_load(self, saved_id):
        assert saved_id[0] == "storage"
        return torch.storage.TypedStorage(_internal=True)

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
            return getattr(torch._utils, name)
        if module == "torch" and name in _STORAGES:
            return getattr(torch, name)
        raise Exception(f"global '{module}/{name}' is forbidden")


def check_pt(filename, extra_handler=None):
    try:
        with zipfile.ZipFile(filename) as z:
            for name in z.namelist():
                if not _ALLOWED_NAMES.match(name):
                    raise Exception(f"bad file inside {filename}: {name}")
            pkl = [n for n in z.namelist() if re.match(r"^([^/]+)/data\.pkl$", n)]
            if len(pkl) != 1:
                raise Exception(f"data.pkl not found in {filename}")
            with z.open(pkl[0]) as f:
                RestrictedUnpickler(f).load()
    except zipfile.BadZipfile:
        with open(filename, "rb") as f:
            unpickler = RestrictedUnpickler(f)
            for _ in range(5):
                unpickler.load()


def load(filename, *args, **kwargs):
    from modules import shared

    try:
        if not getattr(shared.cmd_opts, "disable_safe_unpickle", False):
            check_pt(filename)
    except pickle.UnpicklingError:
        errors.report(f"Error verifying pickled file from {filename}\n-----> !!!! The file is most likely corrupted !!!! <-----",
                      exc_info=True)
        return None
    except Exception:
        errors.report(f"Error verifying pickled file from {filename}\nThe file may be malicious, so the program is not "
                      f"going to read it.\nYou can skip this check with --disable-safe-unpickle commandline argument.",
                      exc_info=True)
        return None
    return unsafe_torch_load(filename, *args, **kwargs)


unsafe_torch_load = torch.load


def install() -> None:
    """Stand-in only: what the real module does at import (``torch.load = load``)."""
    global unsafe_torch_load
    if torch.load is not load:
        unsafe_torch_load = torch.load
        torch.load = load
