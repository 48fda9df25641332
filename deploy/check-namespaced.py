#!/usr/bin/env python3
"""Checks the rendered namespace-scoped install (deploy/overlays/namespaced)
against the rendered base; deploy/check.sh runs it.

  deploy/check-namespaced.py --base BASE.yaml [LABEL=]OVERLAY.yaml

One install mirrors the namespaces listed in `meshmirror run --namespace`
(`--namespace=team-a,team-b`, or the flag repeated, or MESHMIRROR_NAMESPACE
with commas): each is watched with namespaced list and watch, so each needs a
Role, and claims are decided across the listed namespaces. Fails when:
  - a ClusterRoleBinding grants writes on WorkloadEntries (through a
    ClusterRole of the overlay, or one it does not define, such as the
    built-in `edit`, whose rules cannot be checked here);
  - the Deployment has no `--namespace` (it would list and watch
    cluster-wide, which no Role allows); a value of the list (split on
    commas, every flag and MESHMIRROR_NAMESPACE) is not a namespace's name,
    or names a namespace twice (the binary refuses to start on both); or
    both the flag and MESHMIRROR_NAMESPACE are set (the flag wins and the
    variable is silently ignored);
  - a listed namespace is the install's own namespace (that tenant would
    control the controller's pod, its token and its cloud credentials);
  - a listed namespace lacks the Role `meshmirror` with exactly the rules of
    the base's ClusterRole `meshmirror`, or the RoleBinding of that Role to
    the Deployment's ServiceAccount (its pods would never become ready: the
    caches wait for every listed namespace's first list);
  - a Role or RoleBinding lies in a namespace that is not listed, other than
    the install's own one, or is another than those two: `meshmirror` in a
    listed namespace, `meshmirror-leader-election` (the Lease) in the
    install's; or a RoleBinding binds another role than its namesake;
  - a binding names a ServiceAccount in another namespace than the install's
    (kustomize's `namespace:` does not move a subject's namespace);
  - any other namespaced object lies outside the install's namespace;
  - an `--allowed-groups` rule names a namespace that is not listed (it
    could never apply: this install sees no other namespace's mirrors) or
    `*` (a second install would grant the same groups to its namespaces),
    or `--allow-all-groups` is set (the allow-list is what keeps two
    installs from mirroring one group).
A listed namespace with no `--allowed-groups` rule is only noted: its
mirrors are all refused (GroupNotAllowed) until it gets one.

Needs: python3 with PyYAML (kubernetes-validate brings it).
"""

import argparse
import re
import sys

import yaml

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}
# A namespace's name: an RFC 1123 label.
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


CLUSTER_SCOPED = {"namespaces"}


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


def settings_of(container, problems):
    """(the --namespace list as the binary reads it, where it came from,
    allowed-group rules, --allow-all-groups) from a container's args and env."""
    args = [str(a) for a in container.get("args") or []]
    flags = flag_values(args, "--namespace")
    env = [e for e in container.get("env") or [] if e.get("name") == "MESHMIRROR_NAMESPACE"]
    if flags and env:
        problems.append(
            "both --namespace and MESHMIRROR_NAMESPACE are set: the flag wins and the variable is ignored;"
            " list the namespaces in one place"
        )
    if flags:
        given, source = flags, "--namespace"
    elif env:
        if "value" not in env[-1]:
            problems.append("MESHMIRROR_NAMESPACE comes from valueFrom: its namespaces cannot be checked")
        given, source = [str(env[-1].get("value", ""))], "MESHMIRROR_NAMESPACE"
    else:
        given, source = [], None
    # As the binary splits and trims them (a value_delimiter of ',').
    namespaces = [ns.strip() for value in given for ns in value.split(",")]
    rules = [r.strip() for v in flag_values(args, "--allowed-groups") for r in v.split(";") if r.strip()]
    return namespaces, source, rules, "--allow-all-groups" in args


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the rendered base (deploy/install.yaml)")
    parser.add_argument("overlay", help="[LABEL=]FILE: the rendered namespace-scoped overlay")
    args = parser.parse_args()
    label, _, path = args.overlay.rpartition("=")
    label = label or path
    base, objects = load(args.base), load(path)
    problems, notes = [], []

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
    # A Role cannot grant a cluster-scoped resource: the namespaced install
    # goes without (reading istiod's namespace label; the cluster's own
    # network is then unknown to the network check, which says so).
    want = {t for t in triples(base_roles[0].get("rules")) if t[1] not in CLUSTER_SCOPED}

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

    # 2. The --namespace list: namespace names, each once, not the install's.
    # `watched` keeps the valid names, once each, for the checks below.
    watched, source, allowed, allow_all, home, account = [], None, [], False, None, None
    deployments = find("Deployment", "meshmirror")
    if len(deployments) != 1:
        problems.append("no single Deployment meshmirror")
    else:
        deployment = deployments[0]
        home = deployment["metadata"].get("namespace")
        pod = deployment["spec"]["template"]["spec"]
        account = pod.get("serviceAccountName", "default")
        container = next(c for c in pod["containers"] if c["name"] == "meshmirror")
        listed, source, allowed, allow_all = settings_of(container, problems)
        if source is None:
            problems.append("the Deployment has no --namespace: it would list and watch every namespace, which no Role allows")
        for ns in listed:
            if not NAMESPACE_NAME.fullmatch(ns):
                problems.append(
                    f"{source}: {ns!r} is not a namespace's name (the binary refuses to start);"
                    " list namespaces separated by commas, e.g. --namespace=team-a,team-b"
                )
            elif ns in watched:
                problems.append(f"{source}: namespace {ns} is listed twice (the binary refuses to start)")
            elif ns == home:
                problems.append(
                    f"{source}: {ns} is the install's own namespace: run meshmirror in a namespace of its own"
                    " (that tenant would otherwise control the controller's pod, token and cloud credentials)"
                )
            else:
                watched.append(ns)

    # 3. The Role and RoleBinding in each listed namespace.
    subject = {"kind": "ServiceAccount", "name": account, "namespace": home}
    for ns in watched:
        roles = find("Role", "meshmirror", ns)
        if not roles:
            problems.append(
                f"namespace {ns} is in {source} but has no Role meshmirror"
                " (its watches would be refused, and the pods would never become ready)"
            )
        for role in roles:
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
            for b in find("RoleBinding", namespace=ns)
            if b.get("roleRef") == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "meshmirror"}
            and subject in (b.get("subjects") or [])
        ]
        if not bound:
            problems.append(f"namespace {ns}: no RoleBinding of Role meshmirror to ServiceAccount {home}/{account}")

    # 4. Bindings name this install's ServiceAccount; Roles and RoleBindings
    # are the expected ones, in listed namespaces or the install's own;
    # everything else lies in the install's namespace.
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
        expected = {ns: "meshmirror" for ns in watched}
        expected[home] = "meshmirror-leader-election"
        for o in objects:
            ns = o["metadata"].get("namespace")
            name = o["metadata"]["name"]
            what = f"{o['kind']} {ns}/{name}"
            if ns is None:
                continue
            if o["kind"] in ("Role", "RoleBinding"):
                if ns not in expected:
                    # Without a usable list, step 2 has said so already.
                    if source is not None:
                        problems.append(
                            f"{what}: namespace {ns} is not in {source} (--namespace={','.join(watched)}):"
                            " list it, or delete this grant"
                        )
                elif name != expected[ns]:
                    problems.append(
                        f"{what}: the install's Roles and RoleBindings are meshmirror in each listed namespace"
                        f" and meshmirror-leader-election in {home}; this one is neither"
                    )
                elif o["kind"] == "RoleBinding" and o.get("roleRef") != {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": name,
                }:
                    problems.append(f"{what} binds {o.get('roleRef')}, not the Role {name}")
            elif ns != home:
                problems.append(f"{what}: not in the install's namespace {home}")

    # 5. The allow-list grants listed namespaces only.
    if allow_all:
        problems.append(
            "--allow-all-groups: another install's namespaces would be allowed the same groups, and the"
            " allow-list is what keeps two installs from mirroring one group; give each listed namespace"
            " its own groups with --allowed-groups"
        )
    ruled = set()
    for rule in allowed:
        ns, eq, pattern = rule.partition("=")
        if not (eq and ns and pattern):
            problems.append(f"--allowed-groups rule {rule!r} is not NAMESPACE=PATTERN")
        elif ns == "*":
            problems.append(
                f"--allowed-groups rule {rule!r} names every namespace: give each listed namespace its own rule"
                " (another install's namespaces would otherwise be allowed the same groups)"
            )
        elif source is not None and ns not in watched:
            problems.append(
                f"--allowed-groups rule {rule!r}: namespace {ns} is not in {source}"
                f" (--namespace={','.join(watched)}), so it never applies"
            )
        else:
            ruled.add(ns)
    if not allow_all:
        for ns in watched:
            if ns not in ruled:
                notes.append(f"namespace {ns} has no --allowed-groups rule: every mirror in it is refused (GroupNotAllowed)")

    for n in notes:
        print(f"  note {label}: {n}")
    if problems:
        for p in problems:
            print(f"FAIL {label}: {p}", file=sys.stderr)
        return 1
    print(
        f"  ok {label}: install in {home}, --namespace={','.join(watched)} ({len(watched)} namespaces);"
        f" in each, Role meshmirror (= the base's ClusterRole, {len(want)} grants) bound to {home}/{account},"
        f" and no Role or RoleBinding elsewhere but {home}'s leader election;"
        f" no ClusterRoleBinding grants WorkloadEntry writes; --allowed-groups names only listed namespaces"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
