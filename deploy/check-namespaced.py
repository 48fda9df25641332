#!/usr/bin/env python3
"""Checks the rendered namespace-scoped install (deploy/overlays/namespaced)
against the rendered base; deploy/check.sh runs it.

  deploy/check-namespaced.py --base BASE.yaml [LABEL=]OVERLAY.yaml

One install mirrors one namespace: `meshmirror run --namespace NS` takes
exactly one (its caches each run one namespaced watch); several tenant
namespaces take one install each, in a namespace of its own. Fails when:
  - a ClusterRoleBinding grants writes on WorkloadEntries (through a
    ClusterRole of the overlay, or one it does not define, such as the
    built-in `edit`, whose rules cannot be checked here);
  - the Deployment's `--namespace` is not exactly one namespace: missing (it
    would list and watch cluster-wide, which the Role does not allow), given
    twice (flag repeated, or flag and MESHMIRROR_NAMESPACE; the binary refuses
    a repeated flag), or a comma list (the binary would take it as one
    namespace literally named "a,b"), or not a namespace name at all;
  - the mirrored namespace is the install's own namespace (the tenant would
    control the controller's pod, its token and its cloud credentials);
  - the mirrored namespace lacks the Role `meshmirror` with exactly the rules
    of the base's ClusterRole `meshmirror`, or the RoleBinding of that Role to
    the Deployment's ServiceAccount;
  - a binding names a ServiceAccount in another namespace than the install's
    (kustomize's `namespace:` does not move a subject's namespace);
  - an object lies in a namespace that is neither the install's nor, for a
    Role or RoleBinding, the mirrored one (a Role or RoleBinding left in a
    namespace this install does not watch, say after a copy);
  - an `--allowed-groups` rule names another namespace than the mirrored one
    (it could never apply: this install sees no other namespace's mirrors)
    or `*` (a copy for another namespace would grant it the same groups),
    or `--allow-all-groups` is set (the allow-list is what keeps two installs
    from mirroring one group).

Needs: python3 with PyYAML (kubernetes-validate brings it).
"""

import argparse
import re
import sys

import yaml

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}
# A namespace's name: an RFC 1123 label.
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


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


def flag_values(args, flag):
    """Every value given to `flag` (`--flag=V` or `--flag V`), in order."""
    values = []
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1 :])
        elif arg == flag:
            values.append(args[i + 1] if i + 1 < len(args) else "")
    return values


def settings_of(container):
    """(--namespace values as given, allowed-group rules, --allow-all-groups)
    from a container's args and env."""
    args = [str(a) for a in container.get("args") or []]
    namespaces = [f"--namespace={v}" for v in flag_values(args, "--namespace")]
    for env in container.get("env") or []:
        if env.get("name") == "MESHMIRROR_NAMESPACE":
            namespaces.append(f"MESHMIRROR_NAMESPACE={env.get('value', '(valueFrom: cannot be checked)')}")
    rules = [r.strip() for v in flag_values(args, "--allowed-groups") for r in v.split(";") if r.strip()]
    return namespaces, rules, "--allow-all-groups" in args


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

    # 2. Exactly one --namespace, a namespace's name. When it is not, the
    # checks below that compare with it are skipped (they would only repeat it).
    watched, allowed, allow_all, home, account = None, [], False, None, None
    deployments = find("Deployment", "meshmirror")
    if len(deployments) != 1:
        problems.append("no single Deployment meshmirror")
    else:
        deployment = deployments[0]
        home = deployment["metadata"].get("namespace")
        pod = deployment["spec"]["template"]["spec"]
        account = pod.get("serviceAccountName", "default")
        container = next(c for c in pod["containers"] if c["name"] == "meshmirror")
        given, allowed, allow_all = settings_of(container)
        one = "meshmirror run --namespace takes exactly one namespace (a list is not supported yet): install meshmirror once per mirrored namespace"
        if not given:
            problems.append("the Deployment has no --namespace: it would list and watch every namespace, which no Role allows")
        elif len(given) > 1:
            problems.append(f"the namespace is given {len(given)} times ({', '.join(given)}); {one}")
        else:
            value = given[0].partition("=")[2]
            if "," in value:
                problems.append(
                    f"{given[0]} is a list; {one}"
                    f" (this one would watch a namespace literally named {value!r})"
                )
            elif not NAMESPACE_NAME.fullmatch(value):
                problems.append(f"{given[0]} is not a namespace's name")
            else:
                watched = value
    if watched is not None and watched == home:
        problems.append(
            f"--namespace={watched} is the install's own namespace: run meshmirror in a namespace of its own"
            " (its tenant would otherwise control the controller's pod, token and cloud credentials)"
        )
        watched = None

    # 3. The Role and RoleBinding in the mirrored namespace.
    if watched is not None:
        roles = find("Role", "meshmirror", watched)
        if not roles:
            problems.append(f"namespace {watched} is --namespace but has no Role meshmirror")
        for role in roles:
            got = triples(role.get("rules"))
            if got != want:
                missing = sorted(" ".join(t[:3]) for t in want - got)
                extra = sorted(" ".join(t[:3]) for t in got - want)
                problems.append(
                    f"Role {watched}/meshmirror differs from the base's ClusterRole meshmirror"
                    f" (missing: {missing or 'nothing'}; extra: {extra or 'nothing'})"
                )
        subject = {"kind": "ServiceAccount", "name": account, "namespace": home}
        bound = [
            b
            for b in find("RoleBinding", namespace=watched)
            if b.get("roleRef") == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "meshmirror"}
            and subject in (b.get("subjects") or [])
        ]
        if not bound:
            problems.append(f"namespace {watched}: no RoleBinding of Role meshmirror to ServiceAccount {home}/{account}")

    # 4. Bindings name this install's ServiceAccount; nothing lies elsewhere.
    if home is not None:
        for binding in find("RoleBinding") + find("ClusterRoleBinding"):
            meta = binding["metadata"]
            where = f"{binding['kind']} {meta.get('namespace') + '/' if meta.get('namespace') else ''}{meta['name']}"
            for s in binding.get("subjects") or []:
                if s.get("kind") == "ServiceAccount" and s.get("namespace") != home:
                    problems.append(
                        f"{where} binds ServiceAccount {s.get('namespace')}/{s.get('name')},"
                        f" not this install's (in {home})"
                    )
        for o in objects:
            ns = o["metadata"].get("namespace")
            if ns is None or ns == home:
                continue
            what = f"{o['kind']} {ns}/{o['metadata']['name']}"
            if o["kind"] in ("Role", "RoleBinding"):
                if watched is not None and ns != watched:
                    problems.append(f"{what}: namespace {ns} is not --namespace")
            else:
                problems.append(f"{what}: not in the install's namespace {home}")

    # 5. The allow-list grants the mirrored namespace only.
    if allow_all:
        problems.append(
            "--allow-all-groups: with one install per namespace, the allow-list is what keeps two installs"
            " from mirroring the same group; give the namespace its own groups with --allowed-groups"
        )
    for rule in allowed:
        ns, eq, pattern = rule.partition("=")
        if not (eq and ns and pattern):
            problems.append(f"--allowed-groups rule {rule!r} is not NAMESPACE=PATTERN")
        elif ns == "*":
            problems.append(
                f"--allowed-groups rule {rule!r} names every namespace: name {watched or 'the mirrored namespace'}"
                " (a copy of this install for another namespace would otherwise grant it the same groups)"
            )
        elif watched is not None and ns != watched:
            problems.append(f"--allowed-groups rule {rule!r}: namespace {ns} is not --namespace, so it never applies")

    if problems:
        for p in problems:
            print(f"FAIL {label}: {p}", file=sys.stderr)
        return 1
    print(
        f"  ok {label}: install in {home}, --namespace={watched} (one namespace);"
        f" Role {watched}/meshmirror (= the base's ClusterRole, {len(want)} grants) bound to {home}/{account};"
        f" no ClusterRoleBinding grants WorkloadEntry writes; --allowed-groups names only {watched}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
