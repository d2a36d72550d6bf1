"""A saved model's folder: where it keeps its ONNX export (`ONNX_FOLDER`, marked by `MANIFEST`), and removing that
export when new weights replace the ones it was made from (`remove_stale_export`, called by every save)."""

import logging
import shutil
from pathlib import Path

# Where a model folder keeps its ONNX export (`sentmtl.serving.onnx_export`), and the file that marks one. Here, beside the
# weights, because every save of new weights must remove the export of the old ones.
ONNX_FOLDER = "onnx"
MANIFEST = "sentmtl_onnx.json"
logger = logging.getLogger(__name__)


def remove_stale_export(folder) -> bool:
    """Remove `folder/onnx/` when it holds an export: it was made from the weights just replaced, and served or pushed
    beside the new ones it would give the old model's outputs. Returns whether one was removed."""
    export = Path(folder) / ONNX_FOLDER
    if not (export / MANIFEST).is_file():
        return False
    shutil.rmtree(export)
    logger.warning(
        "Removed %s: it held the ONNX export of the weights this save replaced (export again for a new one).", export
    )
    return True
