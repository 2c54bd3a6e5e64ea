"""Stand-in for ComfyUI's ``comfy/model_management.py`` (mirrors ComfyUI v0.3.75
``comfy/model_management.py``, CPU mode: ``--cpu``).

Same names and signatures as v0.3.75 for what the DLGSANet pack touches: devices, memory
(``free_memory``, ``module_size``, ``soft_empty_cache``, ``get_free_memory``), ``OOM_EXCEPTION`` and
the interrupt API, whose ``InterruptProcessingException`` derives from ``Exception`` there.
Newer ComfyUI (0.3.76+ / 0.29+) adds ``intermediate_dtype``, ``is_oom``, ``raise_non_oom`` and
makes the interrupt a ``BaseException``; ``tests/comfy_helpers.py`` adds those to this module
when a test plays a newer ComfyUI. ``free_memory`` records its calls for tests (``_calls``).
"""
from __future__ import annotations

import threading

import os

import torch

_calls: list[tuple] = []  # test hook (not in ComfyUI): (function name, args)


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


def module_size(module):
    module_mem = 0
    sd = module.state_dict()
    for k in sd:
        t = sd[k]
        module_mem += t.nelement() * t.element_size()
    return module_mem


def get_free_memory(dev=None, torch_free_too=False):
    # ComfyUI uses psutil.virtual_memory().available; the stand-in avoids the dependency.
    mem_free_total = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if torch_free_too:
        return (mem_free_total, mem_free_total)
    return mem_free_total


def free_memory(memory_required, device, keep_loaded=[]):  # noqa: B006 (ComfyUI's signature)
    _calls.append(("free_memory", memory_required, device))
    return []


def soft_empty_cache(force=False):
    _calls.append(("soft_empty_cache", force))


try:
    OOM_EXCEPTION = torch.cuda.OutOfMemoryError
except:  # noqa: E722 (as in ComfyUI)
    OOM_EXCEPTION = Exception


class InterruptProcessingException(Exception):
    pass


interrupt_processing_mutex = threading.RLock()

interrupt_processing = False


def interrupt_current_processing(value=True):
    global interrupt_processing
    with interrupt_processing_mutex:
        interrupt_processing = value


def processing_interrupted():
    with interrupt_processing_mutex:
        return interrupt_processing


def throw_exception_if_processing_interrupted():
    global interrupt_processing
    with interrupt_processing_mutex:
        if interrupt_processing:
            interrupt_processing = False
            raise InterruptProcessingException()
