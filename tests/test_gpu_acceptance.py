"""python -m bench.gpu_acceptance: one table, and a non-zero exit when any step fails."""
from __future__ import annotations

import pytest

from bench import gpu_acceptance


@pytest.fixture
def outcomes(monkeypatch):
    """Replace each step by a canned (status, seconds, detail)."""
    canned = {}
    for name in gpu_acceptance.STEPS:
        monkeypatch.setattr(gpu_acceptance, f"step_{name}", lambda n=name: canned[n])
    return canned


def test_every_step_passing_or_skipped_exits_zero(outcomes, capsys):
    outcomes.update(parity=("PASS", 30.0, "579 passed"), memcheck=("SKIP", 0.0, "no compute-sanitizer"),
                    train=("PASS", 60.0, "val F1 0.5"), bench=("PASS", 100.0, "wrote report"))
    assert gpu_acceptance.main([]) == 0
    table = capsys.readouterr().out
    assert "| parity | PASS | 30.0 | 579 passed |" in table
    assert "| memcheck | SKIP |" in table


@pytest.mark.parametrize("failing", gpu_acceptance.STEPS)
def test_any_failing_step_exits_non_zero_and_the_rest_still_run(outcomes, capsys, failing):
    outcomes.update({name: ("PASS", 1.0, "ok") for name in gpu_acceptance.STEPS})
    outcomes[failing] = ("FAIL", 1.0, "2 failed | 10 passed")
    assert gpu_acceptance.main([]) == 1
    table = capsys.readouterr().out
    assert f"| {failing} | FAIL | 1.0 | 2 failed / 10 passed |" in table
    assert table.count("| PASS |") == len(gpu_acceptance.STEPS) - 1


def test_an_unknown_step_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_acceptance.main(["--steps", "parity,warp"])
    assert exit_info.value.code == 2
    assert "unknown step(s) warp" in capsys.readouterr().err
