"""The Helm chart on a real node, rendered as `helm install` would (helm's SDK) with self-managed
TLS and the test environment's values (install.py)."""

from __future__ import annotations

import pytest

from checks import (
    assert_all_ready_and_one_leader,
    assert_kubelet_pulls_with_the_written_token,
    assert_token_through_the_pod,
    installed_for,
)
from install import AWS_KEYS, AWS_SECRET, chart_values, render_chart
from tier import NAMESPACE

NS = "node-tier-chart"


@pytest.fixture(scope="module")
def installed(kubectl, image, ecr):
    # The chart takes static keys from a Secret the user creates (aws.credentialsSecret).
    keys = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": AWS_SECRET, "namespace": NAMESPACE},
        "stringData": AWS_KEYS,
    }
    with installed_for(kubectl, [keys, *render_chart(chart_values(image, ecr.url))], "chart", NS) as inst:
        yield inst


def test_all_replicas_ready_and_one_leader(installed, kubectl, api):
    assert_all_ready_and_one_leader(kubectl, api)


def test_a_labelled_secret_gets_its_token_through_the_pod(installed, kubectl, api, ecr):
    assert_token_through_the_pod(kubectl, api, ecr, NS)


def test_the_kubelet_pulls_with_the_written_token_and_not_with_another(installed, kubectl, api, ecr, registry):
    assert_kubelet_pulls_with_the_written_token(kubectl, api, ecr, registry, NS, "chart")
