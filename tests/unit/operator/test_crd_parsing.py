"""Unit tests of ``crd.parse_spec``, ``crd.parse_quantity`` and collection names.

No servers: the schema itself is checked in ``test_crd.py``; these check the
Python model's parsing and the messages it gives.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.unit.operator.specs.specsupport import body

from chromasnap import config
from chromasnap.operator.crd import ChromaCollection, SpecError, parse_quantity, parse_spec


@pytest.mark.parametrize("name", ["a" * 41, "Docs", "1docs", "docs-", "do_cs", ""])
def test_unusable_collection_names_are_refused(name: str) -> None:
    with pytest.raises(SpecError, match=r"metadata\.name"):
        ChromaCollection.from_body(body(name))


# --- parse_spec -------------------------------------------------------------------------


def test_parse_spec_fills_defaults() -> None:
    spec = parse_spec(body())
    assert spec.writer.replicas == 2 and spec.reader.replicas == 2
    assert spec.reader.cache_size == "10Gi"
    assert spec.reader.read_level is config.ReadLevel.FRESH
    assert spec.compactor.schedule == "*/5 * * * *"
    assert spec.retention.snapshots_to_keep == 3
    assert spec.deletion_policy.value == "Retain"
    assert spec.storage.credentials_secret_ref is not None
    assert spec.storage.credentials_secret_ref.access_key_id_key == "AWS_ACCESS_KEY_ID"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"collection": {"name": "x", "dimension": 3}}, r"spec\.collection\.name"),
        ({"collection": {"name": "a..b", "dimension": 3}}, r"spec\.collection\.name"),
        ({"collection": {"name": "docs", "dimension": 0}}, r"spec\.collection\.dimension"),
        (
            {
                "collection": {
                    "name": "docs",
                    "dimension": 3,
                    "hnsw": {"m": 64, "constructionEf": 32},
                }
            },
            r"constructionEf \(32\) must be at least m \(64\)",
        ),
        ({"storage": {"bucket": "Bad_Bucket", "prefix": "p"}}, r"spec\.storage\.bucket"),
        ({"storage": {"bucket": "vectors", "prefix": "/abs"}}, r"spec\.storage\.prefix"),
        ({"storage": {"bucket": "vectors", "prefix": "a/../b"}}, r"spec\.storage\.prefix"),
        (
            {"storage": {"bucket": "vectors", "prefix": "p", "endpoint": "minio:9000"}},
            r"spec\.storage\.endpoint",
        ),
        ({"reader": {"cacheSize": "0"}}, r"spec\.reader\.cacheSize: '0' must be greater than zero"),
        ({"reader": {"cacheSize": "lots"}}, r"spec\.reader\.cacheSize"),
        ({"reader": {"readLevel": "eventual"}}, r"spec\.reader\.readLevel"),
        ({"writer": {"replicas": 101}}, r"spec\.writer\.replicas"),
        ({"compactor": {"schedule": "every five minutes"}}, r"spec\.compactor\.schedule"),
        (
            {"reader": {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}},
            r"requests\.memory \(2Gi\) is greater than limits\.memory \(1Gi\)",
        ),
        (
            {"reader": {"pollIntervalSeconds": 60}, "retention": {"deltaGracePeriodSeconds": 30}},
            r"deltaGracePeriodSeconds \(30\) must be at least reader\.pollIntervalSeconds",
        ),
        ({"deletionPolicy": "Purge"}, r"spec\.deletionPolicy"),
        ({"imagePullSecrets": [{"name": ""}]}, r"spec\.imagePullSecrets\[0\]\.name"),
    ],
)
def test_parse_spec_names_the_bad_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(body(**overrides))


def test_snapshot_read_level_needs_no_grace() -> None:
    spec = parse_spec(
        body(
            reader={"readLevel": "snapshot", "pollIntervalSeconds": 60},
            retention={"deltaGracePeriodSeconds": 0},
        )
    )
    assert spec.retention.delta_grace_period_seconds == 0


def test_parse_spec_refuses_a_missing_spec() -> None:
    b = body()
    del b["spec"]
    with pytest.raises(SpecError, match="spec"):
        parse_spec(b)


def test_parse_spec_does_not_mutate_its_input() -> None:
    b = body()
    before = copy.deepcopy(b)
    parse_spec(b)
    assert b == before


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10Gi", 10 * 2**30),
        ("512Mi", 512 * 2**20),
        ("1G", 10**9),
        ("250m", 0.25),
        ("1.5", 1.5),
        ("2e3", 2000),
        (1073741824, 2**30),
    ],
)
def test_parse_quantity(text: str | int, value: float) -> None:
    assert float(parse_quantity(text)) == value


@pytest.mark.parametrize("text", ["", "Gi", "10GB", "ten", "1.2.3"])
def test_parse_quantity_refuses_junk(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


# --- auth and networkPolicy -------------------------------------------------------------


def test_auth_defaults_and_key_names() -> None:
    spec = parse_spec(body(auth={"secretRef": {"name": "tokens"}}))
    assert spec.auth is not None
    assert spec.auth.key_names() == ("read", "write", "push")
    assert parse_spec(body()).auth is None
    assert parse_spec(body()).network_policy is None


@pytest.mark.parametrize(("auth", "message"), [
    ({}, r"spec\.auth\.secretRef: Field required"),
    ({"secretRef": {"name": ""}}, r"spec\.auth\.secretRef\.name"),
    ({"secretRef": {"name": "t"}, "writeTokensKey": "read"},
     "must name three different keys"),
    ({"secretRef": {"name": "t"}, "pushTokenKey": "write"}, "must name three different keys"),
    ({"secretRef": {"name": "t"}, "readTokensKey": "a/b"}, "is not a Secret key name"),
])
def test_bad_auth_is_refused(auth: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(body(auth=auth))


def test_network_policy_peers_parse() -> None:
    spec = parse_spec(body(networkPolicy={"enabled": True, "ingressFrom": [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"team": "a"}},
         "podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}},
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
        {"ipBlock": {"cidr": "fd00::/8"}},
    ]}))
    np = spec.network_policy
    assert np is not None and np.enabled and np.metrics_from == []
    assert [p.manifest() for p in np.ingress_from] == [
        {"podSelector": {}},
        {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
         "namespaceSelector": {"matchLabels": {"team": "a"}}},
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
        {"ipBlock": {"cidr": "fd00::/8"}},
    ]


@pytest.mark.parametrize(("np", "message"), [
    ({"ingressFrom": [{"podSelector": {}}]}, "take effect only with enabled: true"),
    ({"enabled": False, "metricsFrom": [{"podSelector": {}}]}, "only with enabled: true"),
    ({"enabled": True, "ingressFrom": [{}]}, "needs podSelector, namespaceSelector or ipBlock"),
    ({"enabled": True, "ingressFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]},
     "ipBlock cannot be combined"),
    ({"enabled": True, "ingressFrom": [{"ipBlock": {"cidr": "10.0.0.1"}}]}, "is not a CIDR"),
    ({"enabled": True, "ingressFrom": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                     "except": ["192.168.0.0/16"]}}]},
     "is not inside cidr"),
    ({"enabled": True, "ingressFrom": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                     "except": ["fd00::/8"]}}]},
     "is not inside cidr"),
    ({"enabled": True, "ingressFrom": [{"podSelector": {"matchExpressions": [
        {"key": "a", "operator": "In"}]}}]}, "operator In needs at least one value"),
    ({"enabled": True, "ingressFrom": [{"podSelector": {"matchExpressions": [
        {"key": "a", "operator": "Exists", "values": ["x"]}]}}]}, "takes no values"),
    ({"enabled": True, "ingressFrom": [{"podSelector": {"matchExpressions": [
        {"key": "a", "operator": "Near", "values": ["x"]}]}}]}, "operator"),
])
def test_bad_network_policies_are_refused(np: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message) as err:
        parse_spec(body(networkPolicy=np))
    assert str(err.value).startswith("spec.networkPolicy")
