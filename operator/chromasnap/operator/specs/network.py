"""How clients reach the pods, and who may: Services, PodDisruptionBudgets, NetworkPolicies.

Clients write through ``<name>-writer`` and query through ``<name>-reader``;
writers find every ready reader through ``<name>-readers-headless`` and push new
deltas to the readers' internal port. The disruption budgets keep node drains to
one pod of each kind at a time. With ``spec.networkPolicy.enabled``, one
NetworkPolicy per component admits only what that component needs.
"""

from __future__ import annotations

from typing import Any

from chromasnap.operator.crd import ChromaCollection, NetworkPolicyPeer
from chromasnap.operator.specs.naming import (
    COMPONENT_COMPACTOR,
    COMPONENT_READER,
    COMPONENT_WRITER,
    LABEL_METRICS,
    Manifest,
    metadata,
    names,
    selector_labels,
)
from chromasnap.operator.specs.pods import (
    HTTP_PORT,
    HTTP_PORT_NAME,
    INTERNAL_PORT,
    INTERNAL_PORT_NAME,
)


def service_port(name: str = HTTP_PORT_NAME, port: int = HTTP_PORT) -> dict[str, Any]:
    """A Service port forwarding to the container port of the same name."""
    return {
        "name": name,
        "port": port,
        "targetPort": name,
        "protocol": "TCP",
        "appProtocol": "http",
    }


def _client_service(cc: ChromaCollection, name: str, component: str) -> Manifest:
    meta = metadata(cc, name, component)
    meta["labels"][LABEL_METRICS] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(cc.name, component),
            "ports": [service_port()],
        },
    }


def writer_service(cc: ChromaCollection) -> Manifest:
    """``<name>-writer``: where clients send writes (Chroma HTTP API)."""
    return _client_service(cc, names(cc).writer, COMPONENT_WRITER)


def reader_service(cc: ChromaCollection) -> Manifest:
    """``<name>-reader``: where clients send queries; only ready readers get traffic."""
    return _client_service(cc, names(cc).reader, COMPONENT_READER)


def readers_headless_service(cc: ChromaCollection) -> Manifest:
    """``<name>-readers-headless``: one DNS A record per ready reader.

    Writers resolve it (``CHROMASNAP_NOTIFY_DNS``, ``host:8001``) to push new deltas to
    every reader's internal port. Not-ready readers are left out: they load a snapshot
    and catch up anyway.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(cc, names(cc).readers_headless, COMPONENT_READER),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": selector_labels(cc.name, COMPONENT_READER),
            "ports": [service_port(), service_port(INTERNAL_PORT_NAME, INTERNAL_PORT)],
        },
    }


def _pdb(cc: ChromaCollection, component: str, name: str) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(cc, name, component),
        "spec": {
            # maxUnavailable (not minAvailable) is right for any replica count: it
            # follows HPA scaling and never blocks a node drain at one replica.
            "maxUnavailable": 1,
            # A pod that is not ready (e.g. a reader stuck on a bad download) protects
            # nothing; let drains evict it.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
            "selector": {"matchLabels": selector_labels(cc.name, component)},
        },
    }


def reader_pdb(cc: ChromaCollection) -> Manifest:
    """Voluntary disruptions (drains) take at most one reader at a time."""
    return _pdb(cc, COMPONENT_READER, names(cc).reader)


def writer_pdb(cc: ChromaCollection) -> Manifest:
    """Voluntary disruptions take at most one writer at a time."""
    return _pdb(cc, COMPONENT_WRITER, names(cc).writer)


# --- NetworkPolicies ----------------------------------------------------------------------


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def _own_pods(cc: ChromaCollection, component: str) -> dict[str, Any]:
    """A peer: ``component``'s pods of this collection (a bare podSelector: same namespace)."""
    return {"podSelector": {"matchLabels": selector_labels(cc.name, component)}}


def _peers(peers: list[NetworkPolicyPeer]) -> list[dict[str, Any]]:
    return [p.manifest() for p in peers]


def _http_rules(cc: ChromaCollection, *own: dict[str, Any]) -> list[dict[str, Any]]:
    """Who may reach the HTTP port: ``ingressFrom`` and ``own`` pods; ``metricsFrom``.

    A rule is only rendered with a non-empty ``from``: a rule without one would admit
    every source.
    """
    np = cc.spec.network_policy
    assert np is not None
    rules = []
    clients = _peers(np.ingress_from) + list(own)
    if clients:
        rules.append({"ports": [_tcp(HTTP_PORT)], "from": clients})
    if np.metrics_from:
        # The same port: a NetworkPolicy cannot tell /metrics from the API.
        rules.append({"ports": [_tcp(HTTP_PORT)], "from": _peers(np.metrics_from)})
    return rules


def _network_policy(
    cc: ChromaCollection, component: str, name: str, ingress: list[dict[str, Any]]
) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(cc, name, component),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(cc.name, component)},
            # Ingress only: egress (S3, DNS, the API server, pushes) is left alone.
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def writer_network_policy(cc: ChromaCollection) -> Manifest:
    """Writers: the HTTP port from ``ingressFrom`` and the collection's readers (which
    forward writes), and from ``metricsFrom``."""
    rules = _http_rules(cc, _own_pods(cc, COMPONENT_READER))
    return _network_policy(cc, COMPONENT_WRITER, names(cc).writer, rules)


def reader_network_policy(cc: ChromaCollection) -> Manifest:
    """Readers: the HTTP port from ``ingressFrom`` (and ``metricsFrom``); the internal
    push port only from the collection's writers."""
    rules = _http_rules(cc)
    rules.append({"ports": [_tcp(INTERNAL_PORT)], "from": [_own_pods(cc, COMPONENT_WRITER)]})
    return _network_policy(cc, COMPONENT_READER, names(cc).reader, rules)


def compactor_network_policy(cc: ChromaCollection) -> Manifest:
    """Compactor pods serve nothing: all ingress denied."""
    return _network_policy(cc, COMPONENT_COMPACTOR, names(cc).compactor, [])


def network_policies(cc: ChromaCollection) -> list[Manifest]:
    """The three NetworkPolicies, or none unless ``spec.networkPolicy.enabled``."""
    np = cc.spec.network_policy
    if np is None or not np.enabled:
        return []
    return [writer_network_policy(cc), reader_network_policy(cc), compactor_network_policy(cc)]


def network_policy_names(cc: ChromaCollection) -> list[str]:
    """Names the collection's NetworkPolicies have (when enabled)."""
    n = names(cc)
    return [n.writer, n.reader, n.compactor]
