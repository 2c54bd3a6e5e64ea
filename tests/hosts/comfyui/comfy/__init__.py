"""Stand-in for ComfyUI's ``comfy`` package (``comfy/__init__.py`` is empty in ComfyUI too)."""
