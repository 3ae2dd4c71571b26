"""Unit tests of the CRD (crds/), its Python mirror (chromasnap.crd), the examples and the chart.

These read files only. CEL rules are checked for presence here; that the API
server compiles and enforces them is for the cluster tests.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import annotated_types
import cluster  # hack/cluster.py
import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from chromasnap import resource
from chromasnap.operator import crd
from chromasnap.operator.controller.metrics import MetricsSettings
from chromasnap.operator.settings import OperatorSettings
from chromasnap.operator.specs.access import role
from chromasnap.operator.specs.children import CHILD_KINDS, desired_children

ROOT = Path(__file__).resolve().parents[3]
CRD_PATH = ROOT / "crds" / "chromasnap.dev_chromacollections.yaml"
CHART = ROOT / "charts" / "chromasnap"


def load_crd() -> dict[str, Any]:
    doc = yaml.safe_load(CRD_PATH.read_text())
    assert isinstance(doc, dict)
    return doc


CRD = load_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]
STATUS = SCHEMA["properties"]["status"]


def walk(node: dict[str, Any], path: str = "") -> typing.Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its dotted path (``[]`` for array items, ``{}`` for map values)."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.{{}}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def node_at(path: str) -> dict[str, Any]:
    node = SCHEMA
    for part in path.strip(".").split("."):
        node = node["properties"][part]
    return node


# --- identity ---------------------------------------------------------------------------


def test_names_and_version() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["metadata"]["name"] == "chromacollections.chromasnap.dev"
    spec = CRD["spec"]
    assert spec["group"] == resource.GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": resource.KIND,
        "listKind": "ChromaCollectionList",
        "plural": resource.PLURAL,
        "singular": "chromacollection",
        "shortNames": ["ccol"],
        "categories": ["chroma"],
    }
    assert [v["name"] for v in spec["versions"]] == [resource.VERSION]
    assert VERSION["served"] is True and VERSION["storage"] is True
    assert VERSION["subresources"]["status"] == {}


def test_chart_copy_is_byte_identical() -> None:
    copy_path = CHART / "crds" / CRD_PATH.name
    assert copy_path.read_bytes() == CRD_PATH.read_bytes(), (
        f"run: cp {CRD_PATH.relative_to(ROOT)} {copy_path.relative_to(ROOT)}"
    )
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(
        p.name for p in (ROOT / "crds").iterdir()
    )


# --- structural schema ------------------------------------------------------------------


def test_schema_is_structural() -> None:
    for path, node in walk(SCHEMA):
        where = path or "<root>"
        if node.get("x-kubernetes-int-or-string"):
            assert node.get("anyOf") == [{"type": "integer"}, {"type": "string"}], where
            assert "type" not in node, where
            continue
        assert "type" in node, f"{where} has no type"
        for key in ("anyOf", "allOf", "oneOf", "not"):
            assert key not in node, f"{where}: {key} is only allowed for int-or-string"
        if node["type"] == "object":
            has_shape = "properties" in node or "additionalProperties" in node
            # metadata is the one object left open (the API server owns its schema).
            assert has_shape or path == ".metadata", f"{where}: object without properties"
            assert not ("properties" in node and "additionalProperties" in node), where
            assert "x-kubernetes-preserve-unknown-fields" not in node, where
            for req in node.get("required", []):
                assert req in node["properties"], f"{where}: required {req} not declared"
        if node["type"] == "array":
            assert "items" in node, f"{where}: array without items"


def test_every_user_facing_field_is_documented() -> None:
    for path, node in walk(SPEC, ".spec"):
        if path.endswith(("{}", "[]")) or ".resources." in path or ".imagePullSecrets" in path:
            continue
        assert node.get("description"), f"{path} has no description"
    for path, node in walk(STATUS, ".status"):
        if path.endswith(("{}", "[]")) or path.startswith(".status.conditions[]"):
            continue
        assert node.get("description"), f"{path} has no description"


def test_strings_that_cel_compares_are_bounded() -> None:
    # CEL cost estimation needs a maxLength on every string a rule looks at.
    for path, node in walk(SCHEMA):
        if node.get("type") == "string" and node.get("x-kubernetes-validations"):
            assert "maxLength" in node or "enum" in node, path


def _validator(node: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(
        {"$schema": "http://json-schema.org/draft-04/schema#"}
    )
    return cls(node)  # type: ignore[no-any-return]


def test_defaults_satisfy_their_own_schema() -> None:
    seen = 0
    for path, node in walk(SCHEMA):
        if "default" in node:
            seen += 1
            errors = list(_validator(node).iter_errors(node["default"]))
            assert not errors, f"{path}: default {node['default']!r}: {errors[0].message}"
    assert seen >= 20


def test_patterns_compile_and_match_their_examples() -> None:
    for _path, node in walk(SCHEMA):
        if "pattern" in node:
            re.compile(node["pattern"])  # RE2 syntax is a subset of what this accepts
    assert re.match(node_at("spec.storage.endpoint")["pattern"], "http://minio.minio.svc:9000")
    assert re.match(
        node_at("spec.storage.endpoint")["pattern"], "https://s3.eu-west-1.amazonaws.com"
    )
    assert not re.match(node_at("spec.storage.endpoint")["pattern"], "minio:9000")
    prefix = node_at("spec.storage.prefix")["pattern"]
    assert re.match(prefix, "collections/docs")
    for bad in ("/abs", "trailing/", "a//b", ""):
        assert not re.match(prefix, bad), bad
    cron = node_at("spec.compactor.schedule")["pattern"]
    for good in ("*/5 * * * *", "0 3 * * 1-5", "@hourly", "15,45 * * * *"):
        assert re.match(cron, good), good
    for bad in ("* * * *", "every 5 minutes", "@often"):
        assert not re.match(cron, bad), bad


# --- CEL rules --------------------------------------------------------------------------


def rules_at(path: str) -> list[str]:
    node = SCHEMA if path == "" else node_at(path)
    return [r["rule"].strip() for r in node.get("x-kubernetes-validations", [])]


@pytest.mark.parametrize(
    "path",
    [
        "spec.collection.name",
        "spec.collection.dimension",
        "spec.collection.space",
        "spec.collection.hnsw.m",
        "spec.collection.hnsw.constructionEf",
        "spec.storage.bucket",
        "spec.storage.prefix",
    ],
)
def test_immutable_fields(path: str) -> None:
    assert "self == oldSelf" in rules_at(path)
    node = node_at(path)
    (msg,) = [
        v["message"] for v in node["x-kubernetes-validations"] if v["rule"] == "self == oldSelf"
    ]
    assert "immutable" in msg


def test_mutable_fields_have_no_transition_rule() -> None:
    for path in ("spec.collection.hnsw.searchEf", "spec.storage.endpoint", "spec.reader.replicas"):
        assert "self == oldSelf" not in rules_at(path)


def test_cross_field_rules() -> None:
    spec_rules = " ".join(rules_at("spec"))
    assert "deltaGracePeriodSeconds >= self.reader.pollIntervalSeconds" in spec_rules
    (hnsw_rule,) = rules_at("spec.collection.hnsw")
    assert hnsw_rule.endswith("self.constructionEf >= self.m")
    # Rules on objects with `default: {}` are also evaluated against that default, before
    # nested defaults apply: they must guard optional fields with has().
    for path, node in walk(SPEC, "spec"):
        if node.get("default") == {} and node.get("x-kubernetes-validations"):
            for v in node["x-kubernetes-validations"]:
                assert "has(" in v["rule"], f"{path}: {v['rule']}"
    root = " ".join(rules_at(""))
    assert f"self.metadata.name.size() <= {crd.MAX_NAME_LENGTH}" in root
    for path, node in walk(SCHEMA):
        for v in node.get("x-kubernetes-validations", []):
            assert v.get("message"), f"{path}: rule {v['rule']!r} has no message"
            assert "\n" not in v["rule"].strip() and "\n" not in v["message"].strip()


def test_auth_and_network_policy_rules() -> None:
    (auth_rule,) = rules_at("spec.auth")
    assert "self.readTokensKey != self.writeTokensKey" in auth_rule
    assert "self.writeTokensKey != self.pushTokenKey" in auth_rule
    assert node_at("spec.auth")["required"] == ["secretRef"]
    for key, default in (("readTokensKey", "read"), ("writeTokensKey", "write"),
                         ("pushTokenKey", "push")):
        node = node_at(f"spec.auth.{key}")
        assert node["default"] == default
        assert re.match(node["pattern"], default)
        assert not re.match(node["pattern"], "a/b")
    (np_rule,) = rules_at("spec.networkPolicy")
    assert "self.enabled" in np_rule and "size(self.ingressFrom) == 0" in np_rule
    assert node_at("spec.networkPolicy.enabled")["default"] is False
    peer = node_at("spec.networkPolicy.ingressFrom")["items"]
    assert node_at("spec.networkPolicy.metricsFrom")["items"] == peer
    assert set(peer["properties"]) == {"podSelector", "namespaceSelector", "ipBlock"}
    (peer_rule,) = [v["rule"] for v in peer["x-kubernetes-validations"]]
    assert peer_rule.startswith("has(self.ipBlock) ? !has(self.podSelector)")
    assert peer["properties"]["podSelector"]["properties"] == (
        peer["properties"]["namespaceSelector"]["properties"])
    expr = peer["properties"]["podSelector"]["properties"]["matchExpressions"]["items"]
    assert expr["properties"]["operator"]["enum"] == ["In", "NotIn", "Exists", "DoesNotExist"]
    # CEL cost estimation needs bounds on every list and map a rule may walk.
    for path, node in walk(node_at("spec.networkPolicy"), "spec.networkPolicy"):
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path


def test_cidr_pattern() -> None:
    block = node_at("spec.networkPolicy.ingressFrom")["items"]["properties"]["ipBlock"]
    cidr = block["properties"]["cidr"]["pattern"]
    assert block["properties"]["except"]["items"]["pattern"] == cidr
    for good in ("10.0.0.0/8", "192.168.1.0/24", "fd00::/8", "2001:db8::/32", "::/0"):
        assert re.match(cidr, good), good
    for bad in ("10.0.0.0", "example.com/8", "10.0.0.0/8 ", ""):
        assert not re.match(cidr, bad), bad


# --- the Python mirror ------------------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> X; ``Annotated[X, ...]`` -> X."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert len(args) == 1
        return _unwrap(args[0])
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return annotation


def _compare(model: type[BaseModel], node: dict[str, Any], path: str) -> None:
    props = node["properties"]
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    assert set(fields) == set(props), f"{path}: model {sorted(fields)} vs CRD {sorted(props)}"
    required = {alias for alias, f in fields.items() if f.is_required()}
    assert required == set(node.get("required", [])), path
    for alias, field in fields.items():
        sub = props[alias]
        where = f"{path}.{alias}"
        typ = _unwrap(field.annotation)
        if isinstance(typ, type) and issubclass(typ, BaseModel):
            if sub.get("type") == "array":
                continue
            _compare(typ, sub, where)
            continue
        if typing.get_origin(typ) is list:
            assert sub.get("type") == "array", where
            (item,) = typing.get_args(typ)
            item_type = _unwrap(item)
            if isinstance(item_type, type) and issubclass(item_type, BaseModel):
                _compare(item_type, sub["items"], where + "[]")
            else:
                assert sub["items"].get("type") == "string", where
            continue
        if typing.get_origin(typ) is dict:
            assert sub.get("type") == "object" and "additionalProperties" in sub, where
            continue
        if isinstance(typ, type) and issubclass(typ, Enum):
            assert sorted(e.value for e in typ) == sorted(sub["enum"]), where
        bounds = {"minimum": None, "maximum": None, "minLength": None, "maxLength": None}
        for meta in field.metadata:
            if isinstance(meta, annotated_types.Ge):
                bounds["minimum"] = meta.ge
            elif isinstance(meta, annotated_types.Le):
                bounds["maximum"] = meta.le
            elif isinstance(meta, annotated_types.MinLen):
                bounds["minLength"] = meta.min_length
            elif isinstance(meta, annotated_types.MaxLen):
                bounds["maxLength"] = meta.max_length
        for key in ("minimum", "maximum"):
            assert bounds[key] == sub.get(key), f"{where}: {key} {bounds[key]} vs {sub.get(key)}"
        for key in ("minLength", "maxLength"):
            if bounds[key] is not None:
                assert bounds[key] == sub.get(key), f"{where}: {key}"
        if not field.is_required() and field.default_factory is None:
            default = field.default.value if isinstance(field.default, Enum) else field.default
            if default is None:
                assert "default" not in sub, where
            else:
                assert sub.get("default") == default, f"{where}: {sub.get('default')} vs {default}"


def test_model_mirrors_the_schema() -> None:
    # The CRD requires storage unless database is set (a CEL rule); the model of a
    # collection with pods of its own requires it, one in a pool is a DeclaredSpec.
    spec = copy.deepcopy(SPEC)
    spec["required"] = [*SPEC["required"], "storage"]
    _compare(crd.ChromaCollectionSpec, spec, "spec")


def test_a_collection_in_a_pool_needs_no_storage() -> None:
    from chromasnap.operator.database import DeclaredCollection, declared_database

    rules = [r["rule"] for r in SPEC["x-kubernetes-validations"]]
    assert "has(self.storage) != has(self.database)" in rules
    assert SPEC["properties"]["database"]["x-kubernetes-validations"][0]["rule"] == (
        "self == oldSelf")
    body = {"metadata": {"name": "docs", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": apply_defaults(SPEC, {"database": "team-a",
                                          "collection": {"name": "docs", "dimension": 8}})}
    assert declared_database(body) == "team-a"
    member = DeclaredCollection.from_body(body)
    assert (member.spec.database, member.spec.collection.name) == ("team-a", "docs")
    assert declared_database({"spec": MINIMAL}) is None
    with pytest.raises(crd.SpecError, match="storage"):
        crd.ChromaCollection.from_body(body)


def apply_defaults(node: dict[str, Any], obj: Any) -> Any:
    """Default ``obj`` the way the API server does: top-down, ``default: {}`` then its fields."""
    if node.get("type") == "object" and isinstance(obj, dict):
        for name, sub in node.get("properties", {}).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                obj[name] = apply_defaults(sub, obj[name])
        if isinstance(node.get("additionalProperties"), dict):
            for k in obj:
                obj[k] = apply_defaults(node["additionalProperties"], obj[k])
    if node.get("type") == "array" and isinstance(obj, list):
        return [apply_defaults(node["items"], o) for o in obj]
    return obj


def _prune_empty(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_prune_empty(v) for v in value]
    return value


MINIMAL = {
    "collection": {"name": "docs", "dimension": 8},
    "storage": {"bucket": "vectors", "prefix": "docs", "credentialsSecretRef": {"name": "s3"}},
}


def test_api_server_defaults_equal_model_defaults() -> None:
    defaulted = apply_defaults(SPEC, copy.deepcopy(MINIMAL))
    modelled = crd.parse_spec({"spec": MINIMAL}).model_dump(by_alias=True, mode="json")
    assert _prune_empty(modelled) == _prune_empty(defaulted)


def test_api_server_defaults_equal_model_defaults_for_auth_and_policies() -> None:
    spec = copy.deepcopy(MINIMAL) | {
        "auth": {"secretRef": {"name": "tokens"}},
        "networkPolicy": {"enabled": True, "ingressFrom": [
            {"podSelector": {"matchLabels": {"app": "web"}}},
            {"namespaceSelector": {"matchExpressions": [
                {"key": "team", "operator": "In", "values": ["a", "b"]}]}},
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
        ]},
    }
    defaulted = apply_defaults(SPEC, copy.deepcopy(spec))
    assert defaulted["auth"] == {"secretRef": {"name": "tokens"}, "readTokensKey": "read",
                                 "writeTokensKey": "write", "pushTokenKey": "push"}
    errors = list(_validator(SPEC).iter_errors(defaulted))
    assert not errors, errors[0].message
    modelled = crd.parse_spec({"spec": spec}).model_dump(by_alias=True, mode="json")
    assert _prune_empty(modelled) == _prune_empty(defaulted)


def test_default_space_is_chromas_and_a_stored_space_is_kept() -> None:
    """Issue #17: a spec without a space gets l2, as Chroma's create_collection does; an
    object created while the default was cosine holds ``space: cosine`` (the API server
    stores defaults), which defaulting never overwrites and the transition rule pins."""
    assert node_at("spec.collection.space")["default"] == "l2"
    assert crd.parse_spec({"spec": MINIMAL}).collection.space.value == "l2"
    stored = copy.deepcopy(MINIMAL) | {"collection": {"name": "docs", "dimension": 8,
                                                      "space": "cosine"}}
    assert apply_defaults(SPEC, stored)["collection"]["space"] == "cosine"
    assert crd.parse_spec({"spec": stored}).collection.space.value == "cosine"
    assert "self == oldSelf" in rules_at("spec.collection.space")


def test_defaulted_minimal_spec_is_valid() -> None:
    defaulted = apply_defaults(SPEC, copy.deepcopy(MINIMAL))
    errors = list(_validator(SPEC).iter_errors(defaulted))
    assert not errors, errors[0].message
    # and the model reads the API server's defaulted form unchanged
    again = crd.parse_spec({"spec": defaulted}).model_dump(by_alias=True, mode="json")
    assert _prune_empty(again) == _prune_empty(defaulted)


def test_status_enums_match_the_python_constants() -> None:
    result = node_at("status.lastCompaction.result")
    assert tuple(result["enum"]) == resource.COMPACTION_RESULTS
    desc = node_at("status.conditions")["description"]
    for ctype in crd.CONDITION_TYPES:
        assert ctype in desc


# --- status, printer columns, scale -----------------------------------------------------


def _resolve(jsonpath: str) -> dict[str, Any]:
    """Schema node a printer-column JSONPath points at (``[?(...)]`` filters step into items)."""
    node = SCHEMA
    for part in re.findall(r"\.([A-Za-z]+)(\[\?\(@\.([A-Za-z]+)==\"[^\"]*\"\)\])?", jsonpath):
        name, filt, filt_field = part
        if name == "metadata":
            return {"type": "object"}
        node = node["properties"][name]
        if filt:
            assert node["type"] == "array"
            node = node["items"]
            assert filt_field in node["properties"]
    return node


def test_printer_columns_point_at_status_fields() -> None:
    cols = VERSION["additionalPrinterColumns"]
    names = [c["name"] for c in cols]
    for expected in ("Ready", "Version", "Records", "Pending", "Readers", "Last Compaction", "Age"):
        assert expected in names
    for col in cols:
        path = col["jsonPath"]
        if path == ".metadata.creationTimestamp":
            assert col["type"] == "date"
            continue
        node = _resolve(path)
        want = {"string": "string", "integer": "integer", "date": "string"}[col["type"]]
        assert node.get("type") == want, f"{col['name']}: {path} is {node.get('type')}"
        if col["type"] == "date":
            assert node.get("format") == "date-time", col["name"]


def test_ready_column_reads_the_ready_condition() -> None:
    (ready,) = [c for c in VERSION["additionalPrinterColumns"] if c["name"] == "Ready"]
    assert ready["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'


def test_scale_subresource_maps_to_readers() -> None:
    scale = VERSION["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.reader.replicas",
        "statusReplicasPath": ".status.readers.replicas",
        "labelSelectorPath": ".status.readers.selector",
    }
    assert node_at("spec.reader.replicas")["type"] == "integer"
    assert node_at("status.readers.replicas")["type"] == "integer"
    assert node_at("status.readers.selector")["type"] == "string"


def test_conditions_follow_api_conventions() -> None:
    cond = node_at("status.conditions")
    assert cond["x-kubernetes-list-type"] == "map"
    assert cond["x-kubernetes-list-map-keys"] == ["type"]
    item = cond["items"]
    assert set(item["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert node_at("status.observedGeneration")["type"] == "integer"
    for field in ("version", "createdAt", "records", "bytes"):
        assert field in node_at("status.snapshot")["properties"]
    for field in ("time", "result", "reason", "durationSeconds", "deltasFolded", "recordsFolded"):
        assert field in node_at("status.lastCompaction")["properties"]


# --- examples ---------------------------------------------------------------------------


def example_collections() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == resource.KIND:
                out.append((path.name, doc))
    return out


def test_examples_exist() -> None:
    files = {name for name, _ in example_collections()}
    assert {"minio-collection.yaml", "aws-s3-irsa.yaml"} <= files


@pytest.mark.parametrize(("name", "doc"), example_collections())
def test_examples_are_valid(name: str, doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == resource.API_VERSION
    defaulted = apply_defaults(SPEC, copy.deepcopy(doc["spec"]))
    errors = list(_validator(SPEC).iter_errors(defaulted))
    assert not errors, f"{name}: {errors[0].message}"
    cc = crd.ChromaCollection.from_body(doc)
    children = desired_children(cc, OperatorSettings())
    assert children


def test_secure_example_turns_on_auth_and_network_policies() -> None:
    path = ROOT / "examples" / "secure-collection.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (doc,) = [d for d in docs if d["kind"] == resource.KIND]
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    spec = crd.parse_spec(doc)
    assert spec.auth is not None and spec.network_policy is not None
    assert spec.network_policy.enabled and spec.network_policy.ingress_from
    tokens = secrets[spec.auth.secret_ref.name]
    assert tokens["metadata"]["namespace"] == doc["metadata"]["namespace"]
    assert set(spec.auth.key_names()) <= set(tokens["stringData"])


def test_irsa_example_uses_workload_identity() -> None:
    (doc,) = [d for n, d in example_collections() if n == "aws-s3-irsa.yaml"]
    spec = crd.parse_spec(doc)
    assert spec.storage.credentials_secret_ref is None
    assert spec.storage.endpoint is None
    assert "eks.amazonaws.com/role-arn" in spec.service_account.annotations


# --- Helm chart -------------------------------------------------------------------------


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "chromasnap"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == "0.1.0"


def test_values_match_their_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(values)
    bad = copy.deepcopy(values)
    bad["watchNamespace"] = "Not A Namespace"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(bad)
    bad = copy.deepcopy(values)
    bad["replicas"] = 2  # not a value of this chart: one operator only
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(bad)


def chart_rules(read_secrets: bool = True) -> list[dict[str, Any]]:
    """The operator's RBAC rules as the chart defines them (``chromasnap.rules``)."""
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    body = text.split('{{- define "chromasnap.rules" -}}', 1)[1]
    body = body.rsplit("{{- end }}", 1)[0]
    lines, skipping = [], False
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("{{- if .Values.rbac.readSecrets"):
            skipping = not read_secrets
            continue
        if stripped.startswith("{{- end"):
            skipping = False
            continue
        assert "{{" not in line, f"unexpected template in rules: {line}"
        if not skipping:
            lines.append(line)
    rules = yaml.safe_load("\n".join(lines))
    assert isinstance(rules, list)
    return rules


RESOURCE_OF_KIND = {
    ("v1", "ConfigMap"): ("", "configmaps"),
    ("v1", "ServiceAccount"): ("", "serviceaccounts"),
    ("v1", "Service"): ("", "services"),
    ("rbac.authorization.k8s.io/v1", "Role"): ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rbac.authorization.k8s.io", "rolebindings"),
    ("coordination.k8s.io/v1", "Lease"): ("coordination.k8s.io", "leases"),
    ("apps/v1", "Deployment"): ("apps", "deployments"),
    ("policy/v1", "PodDisruptionBudget"): ("policy", "poddisruptionbudgets"),
    ("batch/v1", "CronJob"): ("batch", "cronjobs"),
    ("batch/v1", "Job"): ("batch", "jobs"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networking.k8s.io", "networkpolicies"),
}


def allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"]
        and resource in r["resources"]
        and verb in r["verbs"]
        and not r.get("resourceNames")
        for r in rules
    )


def test_chart_rbac_covers_every_child_kind() -> None:
    rules = chart_rules()
    for kind in CHILD_KINDS:
        group, resource = RESOURCE_OF_KIND[kind]
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
            assert allowed(rules, group, resource, verb), f"{verb} {resource}"


def test_chart_rbac_can_grant_the_collection_role() -> None:
    # RBAC escalation prevention: whoever creates a Role must hold its permissions.
    rules = chart_rules()
    cc = crd.ChromaCollection.from_body(
        {"metadata": {"name": "docs", "namespace": "ns", "uid": "u"}, "spec": MINIMAL}
    )
    for rule in role(cc)["rules"]:
        for group in rule["apiGroups"]:
            for plural in rule["resources"]:
                for verb in rule["verbs"]:
                    assert allowed(rules, group, plural, verb), f"{verb} {group}/{plural}"


def test_chart_rbac_is_least_privilege() -> None:
    rules = chart_rules()
    for r in rules:
        assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"]
        assert not ({"escalate", "bind", "impersonate"} & set(r["verbs"]))
    assert allowed(rules, "chromasnap.dev", "chromacollections", "watch")
    assert not allowed(rules, "chromasnap.dev", "chromacollections", "delete")
    assert not allowed(rules, "chromasnap.dev", "chromacollections", "create")
    # Secrets: get by name only, and only when asked for.
    assert allowed(rules, "", "secrets", "get")
    for verb in ("list", "watch", "create", "update", "patch", "delete"):
        assert not allowed(rules, "", "secrets", verb)
    assert not allowed(chart_rules(read_secrets=False), "", "secrets", "get")
    # Pods are only read (watched for why they are stuck: unschedulable, image pull);
    # namespaces and CRDs are not needed in --standalone mode.
    (pod_rule,) = [r for r in rules if "pods" in r["resources"]]
    assert pod_rule["apiGroups"] == [""] and pod_rule["resources"] == ["pods"]
    assert sorted(pod_rule["verbs"]) == ["get", "list", "watch"]
    for verb in ("create", "update", "patch", "delete", "deletecollection"):
        assert not allowed(rules, "", "pods", verb)
    assert not any(r["resources"] == ["pods/exec"] or "pods/log" in r["resources"]
                   or "pods/exec" in r["resources"] for r in rules)
    assert not allowed(rules, "", "namespaces", "list")
    assert not allowed(rules, "apiextensions.k8s.io", "customresourcedefinitions", "list")
    # networking: its own NetworkPolicies only, not ingresses or cluster-wide policy kinds.
    (net,) = [r for r in rules if "networking.k8s.io" in r["apiGroups"]]
    assert net["apiGroups"] == ["networking.k8s.io"] and net["resources"] == ["networkpolicies"]
    assert not allowed(rules, "networking.k8s.io", "ingresses", "create")


def _helm(*args: str) -> str:
    proc = subprocess.run(
        [str(cluster.tool("helm")), *args], capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.tools  # the real helm: runs after the unit tests, once it is built
def test_helm_lint_and_template() -> None:
    _helm("lint", "--strict", str(CHART))
    rendered = list(yaml.safe_load_all(_helm("template", "cs", str(CHART), "-n", "chromasnap")))
    kinds = {d["kind"]: d for d in rendered if d}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"} <= set(kinds)
    dep = kinds["Deployment"]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert "--all-namespaces" in c["args"] and "--standalone" in c["args"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert kinds["ClusterRole"]["rules"] == chart_rules()
    scoped = list(
        yaml.safe_load_all(
            _helm(
                "template",
                "cs",
                str(CHART),
                "-n",
                "chromasnap",
                "--set",
                "watchNamespace=search",
                "--set",
                "serviceMonitor.enabled=true",
            )
        )
    )
    kinds = {d["kind"]: d for d in scoped if d}
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    assert kinds["Role"]["metadata"]["namespace"] == "search"
    assert kinds["RoleBinding"]["subjects"][0]["namespace"] == "chromasnap"
    assert (
        "--namespace=search"
        in kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert kinds["ServiceMonitor"]["spec"]["namespaceSelector"] == {"matchNames": ["search"]}


def test_chart_sets_only_env_the_operator_reads() -> None:
    text = (CHART / "templates" / "deployment.yaml").read_text()
    names = set(re.findall(r"- name: (CHROMASNAP_[A-Z_]+)", text))
    assert names, "no CHROMASNAP_ env in the operator Deployment"
    fields = {"CHROMASNAP_" + f.upper() for f in OperatorSettings.model_fields}
    fields |= {"CHROMASNAP_OPERATOR_METRICS_" + f.upper() for f in MetricsSettings.model_fields}
    assert names <= fields, names - fields
