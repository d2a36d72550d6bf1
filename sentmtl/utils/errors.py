"""How the command-line tools end on an error the user can act on: one line, a non-zero exit, no traceback."""

import os

# A bad value, a missing file, no network (ConnectionError) or a model that cannot be found (transformers raises
# OSError) are the user's to fix: the message says what and where. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, ImportError)
DEBUG_VARIABLE = "SENTMTL_DEBUG"


def debug_requested() -> bool:
    """`SENTMTL_DEBUG=1`: show the traceback of user errors too."""
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no", "off")


def one_line(prog: str, err: BaseException) -> str:
    return f"{prog}: error: {err} ({DEBUG_VARIABLE}=1 shows the traceback)"
