"""Stand-in for the ``modules`` package of AUTOMATIC1111 WebUI 1.10 (tests only; see ../README.md)."""
