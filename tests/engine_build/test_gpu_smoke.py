import shutil

import pytest

from engine_build.build import trtllm_version

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(trtllm_version() is None, reason="TensorRT-LLM 1.2.1 is not installed here: the GPU smoke "
                    "test runs only on a GPU machine")
@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no NVIDIA GPU on this machine")
def test_gpu_smoke(tmp_path):
    from engine_build.smoke import main

    assert main(["--out", str(tmp_path)]) == 0
