"""deploy/overlays/self-managed on a real node: what `kubectl apply -k` gives a user, with only
the test environment's settings on top (install.py). Secret values are compared, never printed."""

from __future__ import annotations

import pytest

from checks import (
    assert_all_ready_and_one_leader,
    assert_kubelet_pulls_with_the_written_token,
    assert_leader_hands_over_and_the_refresher_renews,
    assert_rolling_restart_loses_no_token,
    assert_token_through_the_pod,
    installed_for,
)
from install import SELF_MANAGED, overlay, render_overlay

NS = "node-tier-overlay"


@pytest.fixture(scope="module")
def installed(kubectl, image, ecr, tmp_path_factory):
    objects = render_overlay(kubectl, overlay(tmp_path_factory.mktemp("overlay"), SELF_MANAGED, image, ecr.url))
    with installed_for(kubectl, objects, "self-managed overlay", NS) as inst:
        yield inst


def test_all_replicas_ready_and_one_leader(installed, kubectl, api):
    assert_all_ready_and_one_leader(kubectl, api)


def test_a_labelled_secret_gets_its_token_through_the_pod(installed, kubectl, api, ecr):
    assert_token_through_the_pod(kubectl, api, ecr, NS)


def test_the_kubelet_pulls_with_the_written_token_and_not_with_another(installed, kubectl, api, ecr, registry):
    assert_kubelet_pulls_with_the_written_token(kubectl, api, ecr, registry, NS, "self-managed overlay")


def test_a_rolling_restart_under_writes_leaves_no_write_without_a_token(installed, kubectl, api, ecr):
    assert_rolling_restart_loses_no_token(kubectl, api, ecr, NS)


def test_deleting_the_leader_hands_over_and_the_refresher_renews(installed, kubectl, api, ecr):
    assert_leader_hands_over_and_the_refresher_renews(kubectl, api, ecr, NS)
