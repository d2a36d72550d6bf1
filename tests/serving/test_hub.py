"""sentmtl/serving/hub.py: a folder without a saved model is refused before anything is uploaded. The push of a
trained folder (the file list, a branch) and a failed push at the end of a run: tests/e2e/test_run_mtl.py."""

import pytest

from sentmtl.serving.hub import HubPushError, push_folder


def test_push_of_a_folder_without_a_model(tmp_path):
    with pytest.raises(HubPushError, match="holds no saved model"):
        push_folder(tmp_path, "someone/model")
