#!/usr/bin/env python3
"""Validates every Kubernetes object deploy/check.sh is given, and says which
validator covered each one. An object of a kind no validator knows fails.

  deploy/validate-kinds.py --crd deploy/crd.yaml -k 1.33.0 -k 1.37.0 [LABEL=]FILE...

Validators, by kind:
  built-in kinds      kubernetes-validate --strict, against every -k version
                      (the library the CLI wraps: a kind it has no schema for
                      is not skipped with a warning but handed to the next
                      validators, and fails if none takes it);
  ScalingGroupMirror  the openAPIV3Schema of --crd, strict (unknown fields
                      refused, as `kubectl apply` does), metadata as ObjectMeta;
                      its CEL rules and meshmirror's own checks run on a test
                      API server in tests/deploy.rs;
  PrometheusRule      `promtool check rules` on spec.groups (PromQL,
                      templates, durations; it refuses unknown rule fields)
                      and a strict schema of the object around them;
  ServiceMonitor      a strict schema of prometheus-operator's
                      monitoring.coreos.com/v1 ServiceMonitor fields, and it
                      must select a Service of these manifests by a port that
                      Service has.

Needs: python3 with kubernetes-validate (which brings PyYAML and jsonschema),
promtool (Debian package `prometheus`).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict

try:
    import jsonschema
    import kubernetes_validate
    import referencing
    import yaml
    from kubernetes_validate.utils import SchemaNotFoundError, schema_contents
except ImportError as e:  # pragma: no cover
    sys.exit(f"validate-kinds.py: {e} (pip install kubernetes-validate, see scripts/install-test-tools.sh)")

DEFS = "https://kubernetes.io/api/_definitions.json"
OBJECT_META = {"$ref": f"{DEFS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
LABEL_SELECTOR = {"$ref": f"{DEFS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"}
# prometheus-operator's Duration.
DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
ANY = {}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def strict(properties, required=()):
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def envelope(api_version, kind, spec):
    return strict(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": OBJECT_META,
            "spec": spec,
        },
        ["apiVersion", "kind", "metadata", "spec"],
    )


# monitoring.coreos.com/v1 PrometheusRule: the rule group and rule fields of
# prometheus-operator's API; promtool checks the groups' content.
PROMETHEUS_RULE = envelope(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    strict(
        {
            "groups": {
                "type": "array",
                "items": strict(
                    {
                        "name": {"type": "string", "minLength": 1},
                        "labels": STRING_MAP,
                        "interval": DURATION,
                        "query_offset": DURATION,
                        "limit": {"type": "integer"},
                        "partial_response_strategy": {"type": "string"},
                        "rules": {
                            "type": "array",
                            "items": strict(
                                {
                                    "record": {"type": "string"},
                                    "alert": {"type": "string"},
                                    "expr": {"type": ["string", "integer"]},
                                    "for": DURATION,
                                    "keep_firing_for": DURATION,
                                    "labels": STRING_MAP,
                                    "annotations": STRING_MAP,
                                },
                                ["expr"],
                            ),
                        },
                    },
                    ["name"],
                ),
            }
        },
        ["groups"],
    ),
)

# monitoring.coreos.com/v1 ServiceMonitor: every field of prometheus-operator's
# ServiceMonitorSpec and Endpoint; the ones these manifests use are typed.
ENDPOINT = strict(
    {
        "port": {"type": "string"},
        "targetPort": {"type": ["string", "integer"]},
        "path": {"type": "string", "pattern": "^/"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "params": {"type": "object"},
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "trackTimestampsStaleness": {"type": "boolean"},
        "metricRelabelings": {"type": "array"},
        "relabelings": {"type": "array"},
        "tlsConfig": {"type": "object"},
        "bearerTokenFile": {"type": "string"},
        "bearerTokenSecret": {"type": "object"},
        "authorization": {"type": "object"},
        "basicAuth": {"type": "object"},
        "oauth2": {"type": "object"},
        "proxyUrl": {"type": "string"},
        "noProxy": {"type": "string"},
        "proxyFromEnvironment": {"type": "boolean"},
        "proxyConnectHeader": {"type": "object"},
        "followRedirects": {"type": "boolean"},
        "enableHttp2": {"type": "boolean"},
        "filterRunning": {"type": "boolean"},
    }
)
SERVICE_MONITOR = envelope(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    strict(
        {
            "selector": LABEL_SELECTOR,
            "endpoints": {"type": "array", "minItems": 1, "items": ENDPOINT},
            "namespaceSelector": strict(
                {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}
            ),
            "jobLabel": {"type": "string"},
            "targetLabels": {"type": "array", "items": {"type": "string"}},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "sampleLimit": {"type": "integer"},
            "targetLimit": {"type": "integer"},
            "labelLimit": {"type": "integer"},
            "labelNameLengthLimit": {"type": "integer"},
            "labelValueLengthLimit": {"type": "integer"},
            "keepDroppedTargets": {"type": "integer"},
            "bodySizeLimit": {"type": "string"},
            "scrapeProtocols": {"type": "array"},
            "fallbackScrapeProtocol": {"type": "string"},
            "scrapeClassicHistograms": {"type": "boolean"},
            "nativeHistogramBucketLimit": {"type": "integer"},
            "nativeHistogramMinBucketFactor": ANY,
            "convertClassicHistogramsToNHCB": {"type": "boolean"},
            "attachMetadata": {"type": "object"},
            "scrapeClass": {"type": "string"},
            "selectorMechanism": {"enum": ["RelabelConfig", "RoleSelector"]},
            "serviceDiscoveryRole": {"enum": ["Endpoints", "EndpointSlice"]},
        },
        ["selector", "endpoints"],
    ),
)


def crd_schema(node):
    """A CRD's structural schema as JSON Schema, strict about unknown fields
    (what `kubectl apply` refuses) where the CRD does not preserve them."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: crd_schema(sub) for name, sub in value.items()}
        elif key == "items" or key == "not":
            out[key] = crd_schema(value)
        elif key == "additionalProperties":
            out[key] = crd_schema(value) if isinstance(value, dict) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [crd_schema(sub) for sub in value]
        elif key.startswith("x-kubernetes-") or key in ("description", "default", "example", "format", "nullable"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = out["enum"] + [None]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_crds(path):
    """(apiVersion, kind) -> JSON Schema of each served version of each CRD."""
    schemas = {}
    with open(path) as f:
        for crd in yaml.safe_load_all(f):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", True):
                    continue
                schema = crd_schema(version["schema"]["openAPIV3Schema"])
                schema.setdefault("properties", {})
                schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
                schema["properties"]["kind"] = {"const": kind}
                schema["properties"]["metadata"] = OBJECT_META
                schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
                schemas[(f"{group}/{version['name']}", kind)] = schema
    if not schemas:
        sys.exit(f"validate-kinds.py: no CustomResourceDefinition in {path}")
    return schemas


def schema_errors(schema, obj, version):
    """Problems of `obj` against `schema`, its Kubernetes refs resolved from
    kubernetes-validate's definitions of `version`."""
    defs = schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    registry = referencing.Registry().with_resource(DEFS, referencing.Resource.from_contents(defs))
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


def schema_version(version):
    """The kubernetes-validate schema folder a -k version uses (x.y.0)."""
    major, minor = version.split(".")[:2]
    return f"{major}.{minor}.0"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crd", required=True, help="the CRDs the custom objects are checked against")
    parser.add_argument("-k", "--kubernetes-version", action="append", required=True)
    parser.add_argument("-v", "--verbose", action="store_true", help="list built-in objects too")
    parser.add_argument("files", nargs="+", help="[LABEL=]FILE")
    args = parser.parse_args()
    versions = args.kubernetes_version
    crds = load_crds(args.crd)
    promtool = shutil.which("promtool")

    objects = []  # (label, index, object)
    for arg in args.files:
        label, _, path = arg.rpartition("=")
        label = label or path
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for i, doc in enumerate(docs):
            objects.append((label, i, doc))

    services = [o for _, _, o in objects if o.get("kind") == "Service" and o.get("apiVersion") == "v1"]
    failures = 0
    covered = defaultdict(lambda: [0, set()])  # kind -> [count, validators]

    for label, index, obj in objects:
        kind = obj.get("kind", "?")
        api_version = obj.get("apiVersion", "?")
        name = (obj.get("metadata") or {}).get("name", f"#{index}")
        problems = []
        validators = []

        # Built-in kinds.
        found = []
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
                found.append(version)
            except SchemaNotFoundError:
                pass
            except jsonschema.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problems.append(f"kubernetes-validate {version}: {path}: {e.message}")
                found.append(version)
        if found:
            missing = [v for v in versions if v not in found]
            if missing:
                problems.append(f"not a kind of Kubernetes {', '.join(missing)}")
            validators.append(f"kubernetes-validate --strict {','.join(versions)}")

        # Custom kinds.
        elif (api_version, kind) in crds:
            errors = []
            for version in versions:
                # The same schema each time; ObjectMeta is the version's.
                errors += [e for e in schema_errors(crds[(api_version, kind)], obj, schema_version(version)) if e not in errors]
            problems += [f"{args.crd} schema: {e}" for e in errors]
            validators.append(f"{args.crd} schema (strict); CEL rules: tests/deploy.rs")

        elif (api_version, kind) == ("monitoring.coreos.com/v1", "PrometheusRule"):
            problems += [f"PrometheusRule schema: {p}" for p in schema_errors(PROMETHEUS_RULE, obj, schema_version(versions[-1]))]
            if promtool is None:
                problems.append("promtool is missing (Debian package `prometheus`; see scripts/install-test-tools.sh)")
            else:
                with tempfile.NamedTemporaryFile("w", suffix=".rules.yaml", delete=False) as f:
                    yaml.safe_dump({"groups": (obj.get("spec") or {}).get("groups", [])}, f)
                try:
                    run = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
                finally:
                    os.unlink(f.name)
                if run.returncode != 0:
                    output = (run.stdout + run.stderr).replace(f.name, "spec.groups").splitlines()
                    problems += [
                        f"promtool check rules: {line.strip()}"
                        for line in output
                        if line.strip() and not line.startswith("Checking") and line.strip() != "FAILED:"
                    ]
                else:
                    rules = sum(len(g.get("rules", [])) for g in obj["spec"]["groups"])
                    validators.append(f"promtool check rules ({rules} rules)")
            validators.append("PrometheusRule schema (strict)")

        elif (api_version, kind) == ("monitoring.coreos.com/v1", "ServiceMonitor"):
            problems += [f"ServiceMonitor schema: {p}" for p in schema_errors(SERVICE_MONITOR, obj, schema_version(versions[-1]))]
            spec = obj.get("spec") or {}
            want = ((spec.get("selector") or {}).get("matchLabels")) or {}
            namespaces = (spec.get("namespaceSelector") or {}).get("matchNames") or [obj["metadata"].get("namespace")]
            selected = [
                s
                for s in services
                if s["metadata"].get("namespace") in namespaces
                and want.items() <= (s["metadata"].get("labels") or {}).items()
            ]
            if (spec.get("selector") or {}).get("matchExpressions"):
                problems.append("matchExpressions are not evaluated here")
            if not selected:
                problems.append(f"selects no Service of these manifests (labels {want} in {namespaces})")
            for endpoint in spec.get("endpoints") or []:
                for service in selected:
                    ports = [p.get("name") for p in service["spec"].get("ports", [])]
                    if endpoint.get("port") not in ports:
                        problems.append(f"Service {service['metadata']['name']} has no port {endpoint.get('port')!r} ({ports})")
            validators.append("ServiceMonitor schema (strict)")
            if selected:
                validators.append("selects Service " + ", ".join(sorted({s["metadata"]["name"] for s in selected})))

        else:
            problems.append(
                f"nothing validates {api_version} {kind}: not a kind of Kubernetes {', '.join(versions)},"
                f" not in {args.crd}, and no validator of deploy/validate-kinds.py takes it"
            )

        where = f"{label}: {kind}/{name}"
        if problems:
            failures += 1
            for p in problems:
                print(f"FAIL {where}: {p}", file=sys.stderr)
        elif args.verbose or not found:
            print(f"  ok {where} <- {'; '.join(validators)}")
        covered[kind][0] += 1
        covered[kind][1].update(validators)

    print("-- kinds and their validators")
    for kind in sorted(covered):
        count, validators = covered[kind]
        print(f"  {kind} ({count}): {' + '.join(sorted(validators)) or 'NOTHING'}")
    if failures:
        print(f"validate-kinds.py: {failures} of {len(objects)} objects failed", file=sys.stderr)
        return 1
    print(f"validate-kinds.py: {len(objects)} objects valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
