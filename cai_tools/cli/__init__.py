"""The ``cai`` command line: one thin module per subcommand over the library."""

import os

from ..train.hf_models import hub_offline

# Offline unless the user names a server: transformers and PEFT would otherwise take a
# local path they cannot use for a Hub repo id and try to download it.
hub_offline()
# ggml's abort handler attaches a debugger and prints its backtrace on stdout; never that.
os.environ.setdefault("GGML_NO_BACKTRACE", "1")
