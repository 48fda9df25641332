#!/usr/bin/env python3
"""Checks the rendered namespace-scoped install (deploy/overlays/namespaced)
against the rendered base; deploy/check.sh runs it.

  deploy/check-namespaced.py --base BASE.yaml [LABEL=]OVERLAY.yaml

Fails when:
  - a ClusterRoleBinding grants writes on WorkloadEntries (through a
    ClusterRole of the overlay, or one it does not define, such as the
    built-in `edit`, whose rules cannot be checked here);
  - the Deployment has no `--namespace` (it would list and watch cluster-wide,
    which the Roles do not allow);
  - a namespace of `--namespace` lacks the Role with exactly the rules of the
    base's ClusterRole `meshmirror`, or the RoleBinding of that Role to the
    Deployment's ServiceAccount;
  - a Role or RoleBinding grants meshmirror something in a namespace that is
    not in `--namespace` (a namespace half added or half removed);
  - an `--allowed-groups` rule names a namespace that is not in `--namespace`
    (it could never apply).

Needs: python3 with PyYAML (kubernetes-validate brings it).
"""

import argparse
import sys

import yaml

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}
RBAC = "rbac.authorization.k8s.io/v1"


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def triples(rules):
    """A role's rules as a set of (apiGroup, resource, verb, resourceName),
    so that two ways of splitting the same grant into rules compare equal."""
    out = set()
    for rule in rules or []:
        for group in rule.get("apiGroups") or [""]:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    for name in rule.get("resourceNames") or ["*"]:
                        out.add((group, resource, verb, name))
        for url in rule.get("nonResourceURLs") or []:
            for verb in rule.get("verbs") or []:
                out.add(("nonResourceURL", url, verb, "*"))
    return out


def writes_workloadentries(rules):
    return sorted(
        f"{group or 'core'} {resource} {verb}"
        for group, resource, verb, _ in triples(rules)
        if group in ("networking.istio.io", "*")
        and (resource == "*" or resource.split("/")[0] == "workloadentries")
        and verb in WRITE_VERBS
    )


def args_of(container):
    """(namespaces, allowed-group rules) from a container's args and env."""
    namespaces, rules = [], []
    args = list(container.get("args") or [])
    for i, arg in enumerate(args):
        for flag, into, sep in (("--namespace", namespaces, ","), ("--allowed-groups", rules, ";")):
            value = None
            if arg.startswith(flag + "="):
                value = arg[len(flag) + 1 :]
            elif arg == flag and i + 1 < len(args):
                value = args[i + 1]
            if value is not None:
                into += [v.strip() for v in value.split(sep) if v.strip()]
    for env in container.get("env") or []:
        if env.get("name") == "MESHMIRROR_NAMESPACE" and env.get("value"):
            namespaces += [v.strip() for v in env["value"].split(",") if v.strip()]
    return namespaces, rules


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the rendered base (deploy/install.yaml)")
    parser.add_argument("overlay", help="[LABEL=]FILE: the rendered namespace-scoped overlay")
    args = parser.parse_args()
    label, _, path = args.overlay.rpartition("=")
    label = label or path
    base, objects = load(args.base), load(path)
    problems = []

    def find(kind, name=None, namespace=None, docs=objects):
        return [
            o
            for o in docs
            if o.get("kind") == kind
            and (name is None or o["metadata"].get("name") == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)
        ]

    base_roles = find("ClusterRole", "meshmirror", docs=base)
    if len(base_roles) != 1:
        sys.exit(f"check-namespaced.py: no ClusterRole meshmirror in {args.base}")
    want = triples(base_roles[0].get("rules"))

    # 1. Nothing cluster-wide writes WorkloadEntries.
    cluster_roles = {o["metadata"]["name"]: o for o in find("ClusterRole")}
    for binding in find("ClusterRoleBinding"):
        name = binding["metadata"]["name"]
        ref = (binding.get("roleRef") or {}).get("name")
        role = cluster_roles.get(ref)
        if role is None:
            problems.append(
                f"ClusterRoleBinding {name} binds ClusterRole {ref}, which these manifests do not define:"
                " its rules cannot be checked (built-in roles such as edit and admin write WorkloadEntries)"
            )
        elif role.get("aggregationRule"):
            problems.append(f"ClusterRoleBinding {name} binds the aggregated ClusterRole {ref}, whose rules cannot be checked")
        else:
            grants = writes_workloadentries(role.get("rules"))
            if grants:
                problems.append(
                    f"ClusterRoleBinding {name} grants WorkloadEntry writes cluster-wide"
                    f" through ClusterRole {ref} ({', '.join(grants)})"
                )

    # 2. --namespace, the Roles and RoleBindings, and --allowed-groups agree.
    deployments = find("Deployment", "meshmirror")
    if len(deployments) != 1:
        problems.append("no single Deployment meshmirror")
        namespaces, allowed, home, account = [], [], None, None
    else:
        deployment = deployments[0]
        home = deployment["metadata"].get("namespace")
        pod = deployment["spec"]["template"]["spec"]
        account = pod.get("serviceAccountName", "default")
        container = next(c for c in pod["containers"] if c["name"] == "meshmirror")
        namespaces, allowed = args_of(container)
    if deployments and not namespaces:
        problems.append("the Deployment has no --namespace: it would list and watch every namespace, which no Role allows")
    if len(set(namespaces)) != len(namespaces):
        problems.append(f"--namespace names a namespace twice: {','.join(namespaces)}")

    roles = {o["metadata"].get("namespace"): o for o in find("Role", "meshmirror")}
    bindings = [o for o in find("RoleBinding") if o["metadata"].get("namespace") != home]
    for ns in namespaces:
        role = roles.get(ns)
        if role is None:
            problems.append(f"namespace {ns} is in --namespace but has no Role meshmirror")
        else:
            got = triples(role.get("rules"))
            if got != want:
                missing = sorted(" ".join(t[:3]) for t in want - got)
                extra = sorted(" ".join(t[:3]) for t in got - want)
                problems.append(
                    f"Role {ns}/meshmirror differs from the base's ClusterRole meshmirror"
                    f" (missing: {missing or 'nothing'}; extra: {extra or 'nothing'})"
                )
        bound = [
            b
            for b in bindings
            if b["metadata"].get("namespace") == ns
            and b.get("roleRef") == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "meshmirror"}
            and {"kind": "ServiceAccount", "name": account, "namespace": home} in (b.get("subjects") or [])
        ]
        if not bound:
            problems.append(f"namespace {ns}: no RoleBinding of Role meshmirror to ServiceAccount {home}/{account}")
    for role in find("Role"):
        ns = role["metadata"].get("namespace")
        if ns != home and ns not in namespaces:
            problems.append(f"Role {ns}/{role['metadata']['name']}: namespace {ns} is not in --namespace")
    for binding in bindings:
        ns = binding["metadata"].get("namespace")
        if ns not in namespaces:
            problems.append(f"RoleBinding {ns}/{binding['metadata']['name']}: namespace {ns} is not in --namespace")
    for rule in allowed:
        ns = rule.partition("=")[0]
        if ns != "*" and ns not in namespaces:
            problems.append(f"--allowed-groups rule {rule!r}: namespace {ns} is not in --namespace, so it never applies")

    if problems:
        for p in problems:
            print(f"FAIL {label}: {p}", file=sys.stderr)
        return 1
    print(
        f"  ok {label}: --namespace={','.join(namespaces)}; each has Role meshmirror"
        f" (= the base's ClusterRole, {len(want)} grants) bound to {home}/{account};"
        f" no ClusterRoleBinding grants WorkloadEntry writes; --allowed-groups names only these namespaces"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
