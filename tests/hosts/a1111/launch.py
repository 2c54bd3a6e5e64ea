"""Stand-in for A1111 1.10 ``launch.py``: re-exports ``modules/launch_utils.py`` so an extension's
``install.py`` can ``import launch`` (``launch.args``, ``is_installed``, ``run_pip``, ``run``)."""
from modules import launch_utils

args = launch_utils.args
python = launch_utils.python
run = launch_utils.run
is_installed = launch_utils.is_installed
run_pip = launch_utils.run_pip
run_extension_installer = launch_utils.run_extension_installer
