"""protocol.device: HTT's Grams and classifier on the CPU or a CUDA GPU; auto picks the GPU when torch
sees one. Asking for cuda where there is none is one error line before any work."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import run_cli
from tests.test_cli_errors import only_error_line
from tests.test_htt_warnings import small_zoo
from weightsim.chains import ChainOptions
from weightsim.errors import ConfigError
from weightsim.htt.run import run_htt
from weightsim.htt.settings import ClassifierConfig, ProtocolConfig, htt_device

QUICK = dict(queries=2, n_permutations=5, retrieval_permutations=50, repeats=2)
CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return small_zoo(tmp_path_factory.mktemp("device") / "zoo", 3, 2)


def test_auto_is_the_gpu_when_there_is_one():
    assert htt_device("auto") == torch.device("cuda" if CUDA else "cpu")
    assert htt_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"protocol.device='tpu': choose from auto, cpu, cuda"):
        htt_device("tpu")


def test_cpu_runs_and_equals_auto(zoo):
    """device=cpu gives a full report; auto gives the same rows (here, or within float tolerance on a GPU)."""
    cpu = run_htt(str(zoo), ProtocolConfig(**QUICK, device="cpu"), ClassifierConfig(max_iter=100), ChainOptions(),
                  progress=False)
    assert cpu["meta"]["device"] == "cpu" and len(cpu["rows"]) == 2 * 2 * (3 + 1)
    auto = run_htt(str(zoo), ProtocolConfig(**QUICK), ClassifierConfig(max_iter=100), ChainOptions(),
                   progress=False)
    assert auto["meta"]["device"] == ("cuda" if CUDA else "cpu")
    for a, b in zip(cpu["rows"], auto["rows"]):
        assert (a["measure"], a["protocol"], a["chain"]) == (b["measure"], b["protocol"], b["chain"])
        # on a GPU, other kernels sum in another order: the fitted heads move by ~1e-6, and an accuracy
        # over n nets can move only where a test net sits on a decision boundary (none should here)
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=0 if not CUDA else 1 / a["n"]), (a, b)


@pytest.mark.skipif(CUDA, reason="this machine has a CUDA GPU: protocol.device=cuda is valid here")
def test_cuda_without_a_gpu_is_one_error_line(tmp_path):
    """Checked before the zoo is opened: the zoo_dir need not exist."""
    res = run_cli("htt", f"zoo_dir={tmp_path / 'no_zoo'}", "protocol.device=cuda", f"hydra.run.dir={tmp_path / 'run'}",
                  "logger=none", "progress=false")
    assert only_error_line(res) == ("error: protocol.device=cuda, but torch sees no CUDA GPU here "
                                    "(torch.cuda.is_available() is False): set protocol.device=auto or "
                                    "protocol.device=cpu")
