"""The contract facts are in the checkout, and match the team's shared copy where there is one."""

import pytest

from tests.contracts import FACTS, SHARED, facts


def test_the_facts_are_inside_the_checkout_with_their_provenance():
    f = facts()
    assert FACTS.is_file() and f["source"]["files_read"] and f["source"]["v1_2_1_reference_commits"]
    assert {"trtllm_build", "triton_models", "containers"} <= set(f)


@pytest.mark.skipif(not SHARED.exists(), reason="no ../shared/reference beside this checkout (a user's clone)")
def test_the_copy_matches_the_shared_reference():
    assert FACTS.read_bytes() == SHARED.read_bytes(), "run: bash scripts/refresh_contracts.sh"
