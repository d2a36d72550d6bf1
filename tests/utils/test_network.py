"""sentmtl/utils/network.py: an offline flag and an unreachable host are told apart, within seconds."""


def test_offline_flags_and_unreachable_hosts_are_told_apart(monkeypatch):
    from sentmtl.utils.network import offline_flag, unreachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "false")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert offline_flag("HF_HUB_OFFLINE") is None
    assert offline_flag("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") == "HF_DATASETS_OFFLINE"
    assert unreachable("127.0.0.1", 1, timeout=2.0)  # nothing listens on port 1: a reason, within seconds
