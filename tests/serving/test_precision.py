"""`auto` precision on CPUs (issue 31, finding 7): bf16 only where a short probe measured it faster on this machine,
cached per machine, torch version and thread count. Nothing here depends on this machine's CPU or its timings: the
cpuinfo text and the probe's timings are fakes."""

import json
import logging
import sys

import pytest
import torch

from sentmtl.serving import precision

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 avx512f {extra}
bugs\t\t: spectre_v1

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 avx512f {extra}
"""
WITH_BF16 = CPUINFO.format(extra="avx512_bf16 avx512_vnni")
WITH_AMX = CPUINFO.format(extra="avx512_bf16 amx_bf16 amx_tile amx_int8")
WITHOUT_BF16 = CPUINFO.format(extra="avx512_vnni")
REAL_PROBE_CACHE_DIR = precision.probe_cache_dir  # before conftest redirects it for each test


@pytest.fixture
def probe(monkeypatch, tmp_path):
    """Fake cpuinfo and probe timings; `probe.calls` counts the probes run. The cache is tmp_path/"bf16_probe"
    (conftest's autouse fixture)."""

    class Probe:
        calls = 0
        timings = {"fp32_s": 0.010, "bf16_s": 0.005}  # bf16 2× as fast
        cpuinfo = WITH_BF16
        cache_dir = tmp_path / "bf16_probe"

        def cache_files(self):
            return sorted(self.cache_dir.glob("*.json")) if self.cache_dir.is_dir() else []

    fake = Probe()

    def time_probe():
        fake.calls += 1
        return dict(fake.timings)

    monkeypatch.setattr(precision, "time_probe", time_probe)
    monkeypatch.setattr(precision, "_read_cpuinfo", lambda: fake.cpuinfo)
    monkeypatch.delenv(precision.ENV_OVERRIDE, raising=False)
    precision.fast_bf16_available.cache_clear()
    yield fake
    precision.fast_bf16_available.cache_clear()


def fresh(device_type="cpu"):
    """A new process's answer: the in-process memo cleared, the disk cache kept."""
    precision.fast_bf16_available.cache_clear()
    return precision.fast_bf16_available(device_type)


@pytest.mark.parametrize(
    ("fp32_s", "bf16_s", "expected"),
    [
        (0.010, 0.005, True),  # bf16 2× as fast
        (0.0115, 0.010, True),  # exactly the margin
        (0.0114, 0.010, False),  # faster, but not by the margin
        (0.010, 0.010, False),  # a tie
        (0.0775, 0.1551, False),  # the reported CPU: AVX-512 BF16 without AMX, bf16 at half fp32's speed
    ],
)
def test_bf16_only_where_the_probe_measured_it_clearly_faster(probe, fp32_s, bf16_s, expected):
    probe.timings = {"fp32_s": fp32_s, "bf16_s": bf16_s}
    assert fresh() is expected
    assert probe.calls == 1


def test_no_native_bf16_means_fp32_without_a_probe(probe):
    probe.cpuinfo = WITHOUT_BF16
    assert fresh() is False
    assert probe.calls == 0 and probe.cache_files() == []


def test_no_cpuinfo_means_fp32_without_a_probe(probe):
    probe.cpuinfo = ""  # macOS, or /proc unreadable
    assert fresh() is False
    assert probe.calls == 0


def test_flags_are_read_from_the_flags_line_only(probe):
    probe.cpuinfo = "model name\t: a chip named avx512_bf16 amx_bf16\nflags\t\t: fpu sse avx2\n"
    assert fresh() is False
    assert probe.calls == 0


def test_amx_alone_is_native_bf16(probe):
    probe.cpuinfo = CPUINFO.format(extra="amx_bf16 amx_tile")
    assert fresh() is True
    assert probe.calls == 1


@pytest.mark.parametrize("device_type", ["cuda", "mps"])
def test_off_the_cpu_auto_is_fp32_without_a_probe(probe, device_type):
    probe.cpuinfo = WITH_AMX
    assert fresh(device_type) is False
    assert probe.calls == 0


def test_the_default_device_decides_when_none_is_named(probe, monkeypatch):
    monkeypatch.setattr(precision, "default_device", lambda: torch.device("cuda"))
    assert fresh(None) is False
    assert probe.calls == 0
    monkeypatch.setattr(precision, "default_device", lambda: torch.device("cpu"))
    assert fresh(None) is True
    assert probe.calls == 1


def test_the_verdict_is_cached_on_disk_and_not_probed_again(probe):
    assert fresh() is True
    assert fresh() is True
    assert precision.fast_bf16_available("cpu") is True  # and memoised within the process
    assert probe.calls == 1
    (path,) = probe.cache_files()
    record = json.loads(path.read_text())
    assert record["bf16"] is True and record["fp32_s"] == 0.010 and record["bf16_s"] == 0.005
    assert record["key"]["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert record["key"]["flags"] == ["avx512_bf16", "avx512f"]
    assert record["key"]["torch"] == str(torch.__version__)
    assert record["key"]["threads"] == torch.get_num_threads()
    assert [p.name for p in probe.cache_dir.iterdir()] == [path.name]  # no temporary file left behind


def test_a_cached_fp32_verdict_is_kept_too(probe):
    probe.timings = {"fp32_s": 0.010, "bf16_s": 0.020}
    assert fresh() is False
    probe.timings = {"fp32_s": 0.010, "bf16_s": 0.001}  # would now say bf16, but is not asked
    assert fresh() is False
    assert probe.calls == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda monkeypatch: monkeypatch.setattr(torch, "__version__", "9.9.9+cpu"),
        lambda monkeypatch: monkeypatch.setattr(torch, "get_num_threads", lambda: 64),
        lambda monkeypatch: monkeypatch.setattr(
            precision, "_read_cpuinfo", lambda: WITH_BF16.replace("Platinum 8480+", "Gold 6338")
        ),
        lambda monkeypatch: monkeypatch.setattr(precision, "_read_cpuinfo", lambda: WITH_AMX),
    ],
    ids=["torch version", "threads", "cpu model", "flags"],
)
def test_another_torch_thread_count_or_machine_probes_again(probe, monkeypatch, change):
    assert fresh() is True
    with monkeypatch.context() as patched:
        change(patched)
        probe.timings = {"fp32_s": 0.010, "bf16_s": 0.020}
        assert fresh() is False
        assert probe.calls == 2
        assert len(probe.cache_files()) == 2
    assert fresh() is True  # the first key's verdict is still there
    assert probe.calls == 2


@pytest.mark.parametrize("content", ["{not json", "", '{"key": 1}', '{"fp32_s": 1}', "[]", '{"key": null}'])
def test_a_corrupt_cache_file_is_ignored_and_rewritten(probe, content):
    assert fresh() is True
    (path,) = probe.cache_files()
    path.write_text(content)
    assert fresh() is True
    assert probe.calls == 2
    assert json.loads(path.read_text())["bf16"] is True
    assert fresh() is True
    assert probe.calls == 2


def test_a_cached_file_with_unusable_timings_is_measured_again(probe):
    assert fresh() is True
    (path,) = probe.cache_files()
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "bf16_s": 0}))
    assert fresh() is True
    assert probe.calls == 2


def test_an_unwritable_cache_dir_means_probing_each_process(probe, monkeypatch, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a folder cannot be made under a file, even as root
    monkeypatch.setattr(precision, "probe_cache_dir", lambda: blocker / "bf16_probe")
    assert fresh() is True
    assert fresh() is True
    assert probe.calls == 2


def test_a_cache_dir_that_cannot_be_found_means_probing_each_process(probe, monkeypatch):
    def no_cache():
        raise RuntimeError("no datasets cache")

    monkeypatch.setattr(precision, "probe_cache_dir", no_cache)
    assert fresh() is True
    assert fresh() is True
    assert probe.calls == 2


def test_a_failing_probe_means_fp32(probe, monkeypatch):
    def broken():
        raise RuntimeError("no bf16 kernels")

    monkeypatch.setattr(precision, "time_probe", broken)
    assert fresh() is False
    assert probe.cache_files() == []


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("0", False), ("off", False)])
def test_the_environment_decides_without_a_probe(probe, monkeypatch, value, expected):
    monkeypatch.setenv(precision.ENV_OVERRIDE, value)
    probe.cpuinfo = WITHOUT_BF16  # forced even where bf16 is emulated: the user's call
    assert fresh() is expected
    assert probe.calls == 0
    assert fresh("cuda") is False  # the override is for the CPU only


def test_an_unknown_environment_value_is_ignored_with_a_warning(probe, monkeypatch, caplog):
    monkeypatch.setenv(precision.ENV_OVERRIDE, "maybe")
    with caplog.at_level(logging.WARNING, logger="sentmtl.serving.precision"):
        assert fresh() is True
    assert probe.calls == 1
    assert "SENTMTL_CPU_BF16='maybe'" in caplog.text


def test_the_decision_is_logged_once_per_process(probe, caplog):
    probe.timings = {"fp32_s": 0.0775, "bf16_s": 0.1551}
    with caplog.at_level(logging.INFO, logger="sentmtl.serving.precision"):
        for _ in range(3):
            precision.fast_bf16_available("cpu")
    decisions = [r.getMessage() for r in caplog.records if "`auto` precision on the CPU" in r.getMessage()]
    assert len(decisions) == 1
    assert decisions[0].startswith("`auto` precision on the CPU: fp32 (avx512_bf16; bf16 autocast ran")
    assert "0.50×" in decisions[0] and "measured now" in decisions[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sentmtl.serving.precision"):
        assert fresh() is False
    assert "cached" in caplog.text


@pytest.mark.parametrize("bf16_faster", [True, False])
def test_auto_precision_in_encode_and_training_follows_the_probe(
    probe, monkeypatch, tiny_model, tiny_tokenizer, tmp_path, bf16_faster
):
    """encode() and the training arguments both ask fast_bf16_available for the CPU."""
    import sentmtl
    import sentmtl.serving.embed
    from sentmtl.training.arguments import SentMtlTrainingArguments

    probe.timings = {"fp32_s": 0.010, "bf16_s": 0.005 if bf16_faster else 0.020}
    seen = []
    original = torch.autocast

    def recording_autocast(*args, **kwargs):
        seen.append(kwargs.get("enabled"))
        return original(*args, **kwargs)

    monkeypatch.setattr(sentmtl.serving.embed.torch, "autocast", recording_autocast)
    sentmtl.encode(tiny_model, ["the movie was good ."], tiny_tokenizer, device="cpu", show_progress_bar=False)
    monkeypatch.setattr(sentmtl.serving.embed.torch, "autocast", original)
    assert seen[0] is bf16_faster  # encode's own autocast (the model runs its projection in fp32 inside)
    assert SentMtlTrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True).bf16 is bf16_faster
    assert probe.calls == 1


def test_the_real_probe_times_both_precisions_and_leaves_the_process_as_it_was(monkeypatch):
    """The probe itself, shrunk: positive timings, run inside inference mode, the global RNG untouched."""
    monkeypatch.setattr(precision, "PROBE_SHAPE", (8, 16, 32))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with torch.inference_mode():
        timings = precision.time_probe()
        assert torch.is_inference_mode_enabled()
    assert torch.equal(torch.rand(3), expected)
    assert timings["fp32_s"] > 0 and timings["bf16_s"] > 0
    assert 3 <= timings["repeats"] <= precision.PROBE_REPEATS


def test_tests_keep_the_probe_cache_in_tmp(tmp_path):
    assert precision.probe_cache_dir() == tmp_path / "bf16_probe"  # conftest's autouse fixture


def test_the_probe_cache_sits_beside_the_teacher_cache(monkeypatch, tmp_path):
    """Under the datasets cache, as the teacher vectors are: datasets' own setting once it is imported, the same
    rule from the environment before (encode alone does not import datasets)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "imported"))
    assert REAL_PROBE_CACHE_DIR() == tmp_path / "imported" / "sentmtl_cpu_bf16"
    monkeypatch.delitem(sys.modules, "datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    assert REAL_PROBE_CACHE_DIR() == tmp_path / "hf_home" / "datasets" / "sentmtl_cpu_bf16"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    assert REAL_PROBE_CACHE_DIR() == tmp_path / "datasets_cache" / "sentmtl_cpu_bf16"


def test_auto_precision_follows_the_device_not_the_machine(monkeypatch):
    """`is_bf16_supported()` counts emulation, so GPUs that only emulate bf16 got it as "fast"; and embedding on the
    CPU of a GPU machine used the GPU's answer. On CUDA `auto` now means fp32 (bf16 autocast measured slower there
    for this encoder, emulated or native), on the CPU it follows the CPU's own instructions."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    precision.fast_bf16_available.cache_clear()
    try:
        assert precision.fast_bf16_available("cuda") is False
        assert precision.fast_bf16_available() is False  # the default device is the GPU now
        monkeypatch.setattr(precision, "_read_cpuinfo", lambda: "flags\t\t: fpu avx2\n")  # no native bf16
        assert precision.fast_bf16_available("cpu") is False  # the CPU follows its own rule (the tests above)
        assert precision.default_device().type == "cuda"
    finally:
        precision.fast_bf16_available.cache_clear()
