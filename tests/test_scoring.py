"""Branch shares: weight × probability, one definition for the CLI, the detail pane and the table."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from imf_cli.scoring import branch_contributions, branch_shares, dominant_branch, sigmoid


def test_shares_are_weight_times_probability_over_their_sum():
    weights = {"structure": 0.5, "text": 0.3, "multimodal": 0.2}
    logits = {"structure": 0.0, "text": 2.0, "multimodal": -1.0}
    contributions = branch_contributions(weights, logits)
    assert contributions["structure"] == pytest.approx(0.25)
    assert contributions["text"] == pytest.approx(0.3 * sigmoid(2.0))
    shares = branch_shares(weights, logits)
    assert list(shares) == list(logits) and sum(shares.values()) == pytest.approx(1.0)
    total = sum(contributions.values())
    assert all(shares[b] == pytest.approx(contributions[b] / total) for b in logits)


def test_a_tiny_weight_never_dominates_through_a_large_logit():
    # The case: the signed weight×logit picked a branch of weight 0.006 while text carried the most.
    weights = {"structure": 0.006, "visual": 0.45, "text": 0.53, "multimodal": 0.014}
    logits = {"structure": 400.0, "visual": 1.0, "text": 3.0, "multimodal": 20.0}
    assert max(weights, key=lambda b: weights[b] * logits[b]) == "structure"  # what the old highlight did
    assert dominant_branch(weights, logits) == "text"
    assert branch_shares(weights, logits)["structure"] < 0.01


def test_branches_left_out_of_the_logits_do_not_count_and_shares_ignore_renormalisation():
    weights = {"structure": 0.4, "text": 0.3, "multimodal": 0.3}
    logits = {"text": 1.0, "multimodal": -0.5}  # an entity outside the graph: no structure score
    shares = branch_shares(weights, logits)
    assert set(shares) == {"text", "multimodal"}
    renormalised = {"text": 0.5, "multimodal": 0.5}
    assert branch_shares(renormalised, logits) == pytest.approx(shares)


def test_degenerate_inputs_give_zero_shares_not_errors():
    assert branch_shares({}, {}) == {} and dominant_branch({}, {}) is None
    assert branch_shares({"text": 0.0}, {"text": 5.0}) == {"text": 0.0}
    shares = branch_shares({"text": 1.0, "visual": 1.0}, {"text": math.nan, "visual": 0.0})
    assert shares == {"text": 0.0, "visual": 1.0}
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0


def test_the_module_imports_neither_torch_nor_rich():
    code = "import sys, imf_cli.scoring; print(any(m in sys.modules for m in ('torch', 'rich', 'textual')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
