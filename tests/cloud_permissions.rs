//! The example cloud permissions under deploy/examples against the calls the
//! providers make, so that a call added without its permission (or a
//! permission left behind by a call removed) fails here rather than in a
//! customer's account.
//!
//! Each cloud has a hand-written table of every call with the permission that
//! authorizes it. The table is checked both ways against the source: the calls
//! are found in `providers/*/src` (AWS operations and Azure Storage queue
//! methods by name, the names listed from the SDK crates' own sources in
//! Cargo's registry cache at the versions of Cargo.lock; ARM calls by their
//! call sites, their actions derived from the paths they GET; GCE calls by the
//! client fields they go through), every call found must be in the table and
//! every table row must still be called. Then the example policy must grant
//! exactly what the table needs.
//! The AWS EventBridge rule is checked against the detail-types the message
//! parser acts on and against verbatim AWS samples, and the examples' names
//! (accounts, queues, hooks, service accounts) against each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo and nextest set CARGO_MANIFEST_DIR"),
    )
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: not JSON: {e}"))
}

/// The YAML documents of a file (empty ones skipped).
fn yaml_documents(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: not YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(rel: &str) -> Value {
    yaml_documents(rel).remove(0)
}

/// Rust source with whole-line comments and the trailing `#[cfg(test)] mod
/// tests` dropped, and no whitespace at all: a call spread over lines, as
/// rustfmt writes chains, reads `client.describe_instances().filters(`.
fn squeeze(text: &str) -> String {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let squeezed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    match squeezed.find("#[cfg(test)]modtests{") {
        Some(i) => squeezed[..i].to_string(),
        None => squeezed,
    }
}

/// Every `.rs` file under `dir` (relative to the repository), squeezed.
fn squeezed_sources(dir: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root().join(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root()).unwrap().display().to_string();
                out.insert(rel, squeeze(&std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    assert!(!out.is_empty(), "no Rust source under {dir}");
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The names of the method calls `.name(` in squeezed source.
fn method_calls(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in src.match_indices('.') {
        let tail = &src[i + 1..];
        let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        if end > 0 && tail[end..].starts_with('(') {
            out.push(tail[..end].to_string());
        }
    }
    out
}

/// The source directories of a dependency from crates.io: each version in
/// Cargo.lock, unpacked in Cargo's registry cache (the build put it there).
fn dependency_dirs(name: &str) -> Vec<PathBuf> {
    let lock = read("Cargo.lock");
    let versions: Vec<&str> = lock
        .split("[[package]]")
        .filter(|p| p.lines().any(|l| l == format!("name = \"{name}\"")))
        .filter_map(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"'))
        .collect();
    assert!(!versions.is_empty(), "{name} is not in Cargo.lock");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let registries = cargo_home.join("registry/src");
    let mut dirs = Vec::new();
    for registry in
        std::fs::read_dir(&registries).unwrap_or_else(|e| panic!("{}: {e}", registries.display()))
    {
        for version in &versions {
            let dir = registry
                .as_ref()
                .unwrap()
                .path()
                .join(format!("{name}-{version}"));
            if dir.join("Cargo.toml").is_file() {
                dirs.push(dir);
            }
        }
    }
    assert!(
        !dirs.is_empty(),
        "{name} {versions:?} is not unpacked under {}",
        registries.display()
    );
    dirs
}

fn set<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    items.into_iter().map(str::to_string).collect()
}

/// `a` and `b` hold the same; else a message naming what each lacks.
fn same_sets(what: &str, a_name: &str, a: &BTreeSet<String>, b_name: &str, b: &BTreeSet<String>) {
    let only_a: Vec<_> = a.difference(b).collect();
    let only_b: Vec<_> = b.difference(a).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{what}:\n  in {a_name} only: {only_a:?}\n  in {b_name} only: {only_b:?}"
    );
}

// ---------------------------------------------------------------- AWS

/// Every AWS operation the provider calls (the SDK's method name) and the IAM
/// action that authorizes it. A batch call is authorized by the action of its
/// single form (`DeleteMessageBatch` by `sqs:DeleteMessage`).
const AWS_CALLS: &[(&str, &str)] = &[
    (
        "describe_auto_scaling_groups",
        "autoscaling:DescribeAutoScalingGroups",
    ),
    (
        "describe_auto_scaling_instances",
        "autoscaling:DescribeAutoScalingInstances",
    ),
    (
        "describe_lifecycle_hooks",
        "autoscaling:DescribeLifecycleHooks",
    ),
    (
        "complete_lifecycle_action",
        "autoscaling:CompleteLifecycleAction",
    ),
    (
        "record_lifecycle_action_heartbeat",
        "autoscaling:RecordLifecycleActionHeartbeat",
    ),
    ("describe_instances", "ec2:DescribeInstances"),
    (
        "describe_spot_instance_requests",
        "ec2:DescribeSpotInstanceRequests",
    ),
    ("receive_message", "sqs:ReceiveMessage"),
    ("delete_message_batch", "sqs:DeleteMessage"),
];

/// The operations of an AWS SDK crate: one folder each under `src/operation`.
fn aws_operations(krate: &str) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for dir in dependency_dirs(krate) {
        let dir = dir.join("src/operation");
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                ops.insert(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    ops
}

/// The actions an IAM policy allows (no `Deny` and no wildcard in examples).
fn iam_allowed(policy: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for statement in policy["Statement"].as_array().expect("Statement") {
        assert_eq!(statement["Effect"], "Allow", "{statement}");
        let actions: Vec<&str> = match &statement["Action"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().map(|a| a.as_str().unwrap()).collect(),
            other => panic!("Action {other}"),
        };
        for action in actions {
            assert!(!action.contains('*'), "a wildcard action: {action}");
            out.insert(action.to_string());
        }
    }
    out
}

/// The resource(s) of the statement(s) granting `action`.
fn iam_resources(policy: &Value, action: &str) -> Vec<String> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| match &s["Action"] {
            Value::String(a) => a == action,
            Value::Array(a) => a.iter().any(|a| a == action),
            _ => false,
        })
        .flat_map(|s| match &s["Resource"] {
            Value::String(r) => vec![r.clone()],
            Value::Array(r) => r.iter().map(|r| r.as_str().unwrap().to_string()).collect(),
            other => panic!("Resource {other}"),
        })
        .collect()
}

#[test]
fn aws_policy_allows_exactly_what_the_provider_calls() {
    let mut operations = BTreeSet::new();
    for krate in ["aws-sdk-autoscaling", "aws-sdk-ec2", "aws-sdk-sqs"] {
        operations.extend(aws_operations(krate));
    }
    // The listing itself works (a wrong folder would make every check vacuous).
    for op in [
        "describe_auto_scaling_groups",
        "describe_instances",
        "receive_message",
    ] {
        assert!(
            operations.contains(op),
            "{op} not among {} operations",
            operations.len()
        );
    }

    let mut called = BTreeSet::new();
    for (file, src) in squeezed_sources("providers/aws/src") {
        for name in method_calls(&src) {
            if operations.contains(&name) {
                called.insert(name.clone());
                eprintln!("{file}: AWS call {name}");
            }
        }
    }
    let table: BTreeSet<String> = set(AWS_CALLS.iter().map(|(op, _)| *op));
    same_sets(
        "AWS operations (a new call needs a row in AWS_CALLS and its action in deploy/examples/aws/iam-policy.json)",
        "providers/aws/src",
        &called,
        "AWS_CALLS",
        &table,
    );

    let needed = set(AWS_CALLS.iter().map(|(_, action)| *action));
    let allowed = iam_allowed(&json("deploy/examples/aws/iam-policy.json"));
    same_sets(
        "IAM actions (least privilege: exactly what the calls need)",
        "AWS_CALLS",
        &needed,
        "deploy/examples/aws/iam-policy.json",
        &allowed,
    );
}

/// `NAME=value` assignments of a shell script.
fn shell_vars(script: &str) -> BTreeMap<String, String> {
    script
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The script's commands, continuation lines joined.
fn shell_commands(script: &str) -> Vec<String> {
    script
        .replace("\\\n", " ")
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The value of `--flag VALUE` in a command.
fn flag<'a>(command: &'a str, name: &str) -> Option<&'a str> {
    let mut words = command.split(' ');
    words.find(|w| *w == name)?;
    words.next().map(|v| v.trim_matches('"'))
}

/// The ServiceAccount meshmirror runs as: (namespace, name).
fn installed_service_account() -> (String, String) {
    let sa = yaml_documents("deploy/install.yaml")
        .into_iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .expect("a ServiceAccount in deploy/install.yaml");
    (
        sa["metadata"]["namespace"].as_str().unwrap().to_string(),
        sa["metadata"]["name"].as_str().unwrap().to_string(),
    )
}

#[test]
fn aws_examples_agree_with_each_other() {
    let script = read("deploy/examples/aws/setup.sh");
    let vars = shell_vars(&script);
    let var = |k: &str| {
        vars.get(k)
            .unwrap_or_else(|| panic!("setup.sh sets no {k}"))
            .as_str()
    };
    let (account, region, queue) = (var("ACCOUNT"), var("REGION"), var("QUEUE"));
    let commands = shell_commands(&script);
    let command =
        |needle: &str| -> Vec<&String> { commands.iter().filter(|c| c.contains(needle)).collect() };

    // The mirror example's group is the one the script and the policy name.
    let mirror = yaml("deploy/examples/aws/mirror.yaml");
    let aws = &mirror["spec"]["provider"]["aws"];
    assert_eq!(aws["region"], region, "mirror.yaml region vs setup.sh");
    assert_eq!(
        aws["autoScalingGroupName"],
        var("ASG"),
        "mirror.yaml group vs setup.sh"
    );

    // The files the script feeds to AWS.
    for (needle, file) in [
        ("--event-pattern file://", "eventbridge-rule.json"),
        ("--policy-document file://", "iam-policy.json"),
        (
            "--assume-role-policy-document file://",
            "pod-identity-trust.json",
        ),
    ] {
        assert!(
            script.contains(&format!("{needle}{file}")),
            "setup.sh does not use {file}"
        );
    }
    assert!(
        script.contains("sqs-queue-policy.json"),
        "setup.sh does not set the queue policy"
    );

    // The policy scopes the lifecycle answers to the mirrored group and the
    // queue calls to the queue.
    let policy = json("deploy/examples/aws/iam-policy.json");
    let group_arn = format!(
        "arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/{}",
        var("ASG")
    );
    let queue_arn = format!("arn:aws:sqs:{region}:{account}:{queue}");
    for action in [
        "autoscaling:CompleteLifecycleAction",
        "autoscaling:RecordLifecycleActionHeartbeat",
    ] {
        assert_eq!(
            iam_resources(&policy, action),
            vec![group_arn.clone()],
            "{action}"
        );
    }
    for action in ["sqs:ReceiveMessage", "sqs:DeleteMessage"] {
        assert_eq!(
            iam_resources(&policy, action),
            vec![queue_arn.clone()],
            "{action}"
        );
    }
    // Describe calls take no resource-level scoping.
    for action in [
        "autoscaling:DescribeAutoScalingGroups",
        "ec2:DescribeInstances",
    ] {
        assert_eq!(
            iam_resources(&policy, action),
            vec!["*".to_string()],
            "{action}"
        );
    }

    // EventBridge may write to the queue, from the script's rule only.
    let rule = flag(command("aws events put-rule")[0], "--name").expect("put-rule --name");
    let targets = command("aws events put-targets")[0];
    assert_eq!(flag(targets, "--rule"), Some(rule));
    assert!(
        targets.contains("Arn=arn:aws:sqs:$REGION:$ACCOUNT:$QUEUE"),
        "{targets}"
    );
    let queue_policy = json("deploy/examples/aws/sqs-queue-policy.json");
    let statement = &queue_policy["Statement"][0];
    assert_eq!(statement["Principal"]["Service"], "events.amazonaws.com");
    assert_eq!(statement["Action"], "sqs:SendMessage");
    assert_eq!(statement["Resource"], queue_arn.as_str());
    assert_eq!(
        statement["Condition"]["ArnEquals"]["aws:SourceArn"],
        format!("arn:aws:events:{region}:{account}:rule/{rule}").as_str()
    );

    // The hooks the mirror answers exist, on the right transitions, and live
    // longer than meshmirror holds an instance on them.
    let lifecycle = &mirror["spec"]["lifecycle"];
    for (hook_field, transition, hold_field) in [
        (
            "terminateHook",
            "autoscaling:EC2_INSTANCE_TERMINATING",
            "drainSeconds",
        ),
        (
            "launchHook",
            "autoscaling:EC2_INSTANCE_LAUNCHING",
            "launchTimeoutSeconds",
        ),
    ] {
        let hook = lifecycle[hook_field].as_str().expect(hook_field);
        let put = command("put-lifecycle-hook")
            .into_iter()
            .find(|c| flag(c, "--lifecycle-hook-name") == Some(hook))
            .unwrap_or_else(|| panic!("setup.sh creates no hook {hook}"));
        assert_eq!(
            flag(put, "--lifecycle-transition"),
            Some(transition),
            "{put}"
        );
        let timeout: u64 = flag(put, "--heartbeat-timeout").unwrap().parse().unwrap();
        let hold = lifecycle[hold_field].as_u64().expect(hold_field);
        assert!(
            timeout > hold,
            "{hook}: heartbeat timeout {timeout}s <= {hold_field} {hold}s"
        );
    }

    // The role is meant for meshmirror's own ServiceAccount.
    let (namespace, name) = installed_service_account();
    let association = command("create-pod-identity-association")[0];
    assert_eq!(flag(association, "--namespace"), Some(namespace.as_str()));
    assert_eq!(flag(association, "--service-account"), Some(name.as_str()));
    let trust = json("deploy/examples/aws/irsa-trust.json");
    let conditions = trust["Statement"][0]["Condition"]["StringEquals"]
        .as_object()
        .unwrap();
    let sub = conditions
        .iter()
        .find(|(k, _)| k.ends_with(":sub"))
        .map(|(_, v)| v.as_str().unwrap())
        .expect("a :sub condition");
    assert_eq!(sub, format!("system:serviceaccount:{namespace}:{name}"));
    let sa = yaml("deploy/examples/aws/irsa-service-account.yaml");
    assert_eq!(sa["metadata"]["namespace"], namespace.as_str());
    assert_eq!(sa["metadata"]["name"], name.as_str());
    let role = flag(command("aws iam create-role")[0], "--role-name").unwrap();
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        format!("arn:aws:iam::{account}:role/{role}").as_str()
    );
}

/// EventBridge pattern matching, for the forms the example uses: a list of
/// values for a field, nested objects for nested fields.
fn pattern_matches(pattern: &Value, event: &Value) -> bool {
    pattern
        .as_object()
        .expect("a pattern is an object")
        .iter()
        .all(|(key, want)| {
            let got = &event[key];
            match want {
                Value::Object(_) => pattern_matches(want, got),
                Value::Array(options) => {
                    assert!(
                        options.iter().all(|o| !o.is_object()),
                        "content filters are not modelled here: {want}"
                    );
                    match got {
                        Value::Array(items) => items.iter().any(|i| options.contains(i)),
                        v => options.contains(v),
                    }
                }
                other => panic!("not an EventBridge pattern value: {other}"),
            }
        })
}

/// The detail-types `message.rs` matches on (the string patterns of its
/// match arms).
fn parsed_detail_types() -> BTreeSet<String> {
    let text = read("providers/aws/src/message.rs");
    let code = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("\"EC2 ") {
        let tail = &code[i + 1..];
        let end = tail.find('"').unwrap();
        let after = tail[end + 1..].trim_start();
        if after.starts_with("=>") || after.starts_with('|') {
            out.insert(tail[..end].to_string());
        }
    }
    out
}

#[cfg(feature = "aws")]
#[test]
fn eventbridge_rule_forwards_exactly_what_the_parser_reads() {
    use meshmirror_aws::message::{Message, parse};

    let rule = json("deploy/examples/aws/eventbridge-rule.json");
    let rule_types: BTreeSet<String> = rule["detail-type"]
        .as_array()
        .expect("the rule filters on detail-type")
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let rule_sources: BTreeSet<String> = rule["source"]
        .as_array()
        .expect("the rule filters on source")
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();

    // The parser's detail-types, as written in message.rs, are all acted on
    // (not `Ignored`) and all forwarded.
    let parsed = parsed_detail_types();
    assert!(parsed.len() >= 5, "found only {parsed:?} in message.rs");
    same_sets(
        "detail-types",
        "providers/aws/src/message.rs",
        &parsed,
        "deploy/examples/aws/eventbridge-rule.json",
        &rule_types,
    );

    // Verbatim AWS samples: each is forwarded by the rule and read by the
    // parser; together they cover every detail-type and source of the rule.
    let dir = root().join("providers/aws/fixtures");
    let mut seen_types = BTreeSet::new();
    let mut seen_sources = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let event: Value = serde_json::from_str(&text).unwrap();
        let Some(detail_type) = event["detail-type"].as_str() else {
            continue;
        };
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            pattern_matches(&rule, &event),
            "{name}: the rule does not forward it"
        );
        match parse(&text, "us-east-1") {
            Ok(Message::Ignored { detail_type }) => panic!("{name}: parser ignores {detail_type}"),
            Ok(_) => {}
            Err(e) => panic!("{name}: {e}"),
        }
        seen_types.insert(detail_type.to_string());
        seen_sources.insert(event["source"].as_str().unwrap().to_string());
    }
    same_sets(
        "detail-types of the AWS samples vs the rule",
        "providers/aws/fixtures",
        &seen_types,
        "the rule",
        &rule_types,
    );
    same_sets(
        "sources of the AWS samples vs the rule",
        "providers/aws/fixtures",
        &seen_sources,
        "the rule",
        &rule_sources,
    );

    // The checks above can fail: another source, or a detail-type the parser
    // does not act on, is not forwarded.
    let mut other = serde_json::json!({"source": "aws.health", "detail-type": "EC2 Instance Launch Successful"});
    assert!(!pattern_matches(&rule, &other));
    other["source"] = "aws.autoscaling".into();
    assert!(pattern_matches(&rule, &other));
    other["detail-type"] = "EC2 Auto Scaling Instance Refresh Started".into();
    assert!(!pattern_matches(&rule, &other));
    assert!(matches!(
        parse(&other.to_string(), "us-east-1"),
        Ok(Message::Ignored { .. })
    ));
}

// ---------------------------------------------------------------- Azure

/// Every ARM call (the operation name the provider passes to `ArmClient`) and
/// the RBAC actions that authorize it. The client only GETs, so each is a
/// `read`; `$expand=instanceView` adds the instance view's `read`.
const ARM_CALLS: &[(&str, &[&str])] = &[
    (
        "virtualMachineScaleSets.get",
        &["Microsoft.Compute/virtualMachineScaleSets/read"],
    ),
    (
        "virtualMachineScaleSetVMs.list",
        &[
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/instanceView/read",
        ],
    ),
    (
        "networkInterfaces.listVirtualMachineScaleSetNetworkInterfaces",
        &["Microsoft.Compute/virtualMachineScaleSets/networkInterfaces/read"],
    ),
    (
        "publicIPAddresses.listVirtualMachineScaleSetPublicIPAddresses",
        &["Microsoft.Compute/virtualMachineScaleSets/publicIPAddresses/read"],
    ),
    (
        "virtualMachines.list",
        &[
            "Microsoft.Compute/virtualMachines/read",
            "Microsoft.Compute/virtualMachines/instanceView/read",
        ],
    ),
    (
        "networkInterfaces.list",
        &["Microsoft.Network/networkInterfaces/read"],
    ),
    (
        "publicIPAddresses.list",
        &["Microsoft.Network/publicIPAddresses/read"],
    ),
    // An event's pass: the named VMs alone.
    (
        "virtualMachineScaleSetVMs.get",
        &[
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/instanceView/read",
        ],
    ),
    (
        "networkInterfaces.listVirtualMachineScaleSetVMNetworkInterfaces",
        &["Microsoft.Compute/virtualMachineScaleSets/virtualMachines/networkInterfaces/read"],
    ),
    (
        "publicIPAddresses.getVirtualMachineScaleSetPublicIPAddress",
        &[
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/networkInterfaces/ipConfigurations/publicIPAddresses/read",
        ],
    ),
    (
        "virtualMachines.get",
        &[
            "Microsoft.Compute/virtualMachines/read",
            "Microsoft.Compute/virtualMachines/instanceView/read",
        ],
    ),
    (
        "networkInterfaces.get",
        &["Microsoft.Network/networkInterfaces/read"],
    ),
    (
        "publicIPAddresses.get",
        &["Microsoft.Network/publicIPAddresses/read"],
    ),
];

/// The Storage queue calls of the event feed, and the built-in role that
/// grants them (assigned on the queue by setup.sh).
const QUEUE_CALLS: &[(&str, &str)] = &[
    ("receive_messages", "Storage Queue Data Message Processor"),
    ("delete_message", "Storage Queue Data Message Processor"),
];

/// A path variable of the provider, as the ARM path it stands for.
const ARM_PATH_VARIABLES: &[(&str, &str, &str)] = &[
    // (variable, what the source must define it as (squeezed), its expansion)
    (
        "set_path",
        "letset_path=format!(\"{rg_path}/providers/Microsoft.Compute/virtualMachineScaleSets/",
        "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/SET",
    ),
    (
        "rg_path",
        "letrg_path=format!(\"/subscriptions/{",
        "/subscriptions/S/resourceGroups/RG",
    ),
    (
        "rg",
        "letrg=format!(\"/subscriptions/{}/resourceGroups/{}\"",
        "/subscriptions/S/resourceGroups/RG",
    ),
    // The named VMs an event's pass reads (`instances`).
    (
        "uniform_vm_path",
        "format!(\"{}/virtualMachines/{}\",read.set_path,path_segment(vm)?)",
        "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/SET/virtualMachines/0",
    ),
    (
        "flexible_vm_path",
        "format!(\"{}/providers/Microsoft.Compute/virtualMachines/{}\",read.rg_path,path_segment(vm)?",
        "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM",
    ),
    // Ids ARM gave: a Flexible VM's NIC references, and the public IPs
    // NICs reference (under a Uniform set's VM, or plain).
    (
        "nic_path",
        "letSome(nic_path)=resource_path(id)",
        "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/networkInterfaces/NIC",
    ),
    (
        "vmss_pip_path",
        "letSome(vmss_pip_path)=resource_path(&id)",
        "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/SET/virtualMachines/0/networkInterfaces/NIC/ipConfigurations/IP/publicIPAddresses/PIP",
    ),
    (
        "pip_path",
        "letSome(pip_path)=resource_path(&id)",
        "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/publicIPAddresses/PIP",
    ),
];

/// One ARM call site: `.arm.get("op", &path, &[query])` or `.list(...)`.
#[derive(Debug)]
struct ArmCall {
    operation: String,
    path: String,
    query: String,
}

fn arm_calls(src: &str) -> Vec<ArmCall> {
    let mut out = Vec::new();
    for (i, _) in src.match_indices(".arm.") {
        let tail = &src[i + ".arm.".len()..];
        let method: String = tail.chars().take_while(|c| is_ident(*c)).collect();
        match method.as_str() {
            "calls" | "endpoint" | "set_observer" => continue,
            "get" | "get_opt" | "list" => {}
            other => panic!("an ArmClient method this test does not know: {other}"),
        }
        let mut args = &tail[method.len()..];
        // A turbofish: `get_opt::<VirtualMachine>(`.
        if let Some(generic) = args.strip_prefix("::<") {
            args = &generic[generic.find('>').expect("a closed turbofish") + 1..];
        }
        let args = args.strip_prefix("(\"").unwrap_or_else(|| {
            panic!(
                "ARM {method} without a literal operation: {}",
                &args[..60.min(args.len())]
            )
        });
        let (operation, rest) = args.split_once('"').unwrap();
        let rest = rest.strip_prefix(',').expect("an ARM path argument");
        let rest = rest.strip_prefix('&').unwrap_or(rest);
        let (path, rest) = if let Some(f) = rest.strip_prefix("format!(\"") {
            let (template, rest) = f.split_once("\")").unwrap();
            (template.to_string(), rest)
        } else {
            let end = rest.find(|c: char| !is_ident(c)).unwrap();
            (format!("{{{}}}", &rest[..end]), &rest[end..])
        };
        let rest = rest.strip_prefix(",&[").expect("an ARM query argument");
        let query = rest[..rest.find(']').unwrap()].to_string();
        out.push(ArmCall {
            operation: operation.to_string(),
            path,
            query,
        });
    }
    out
}

/// The RBAC `read` action of an ARM path: the provider namespace and the
/// resource types after the last `/providers/`.
fn read_action(path: &str) -> String {
    let (_, typed) = path
        .rsplit_once("/providers/")
        .unwrap_or_else(|| panic!("no provider in {path}"));
    let segments: Vec<&str> = typed.split('/').collect();
    let types: Vec<&str> = segments.iter().skip(1).step_by(2).copied().collect();
    format!("{}/{}/read", segments[0], types.join("/"))
}

/// The path of one item: a list's path (ending with a resource type) with a
/// name appended, a single resource's path as it is.
fn item_path(path: &str) -> String {
    let (_, typed) = path.rsplit_once("/providers/").unwrap();
    if typed.split('/').count() % 2 == 0 {
        format!("{path}/NAME")
    } else {
        path.to_string()
    }
}

fn lower(items: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    items.into_iter().map(|s| s.to_ascii_lowercase()).collect()
}

#[test]
fn azure_role_allows_exactly_what_the_provider_calls() {
    let sources = squeezed_sources("providers/azure/src");
    // Only GETs: `read` actions cover every ARM call.
    let arm = &sources["providers/azure/src/arm.rs"];
    assert_eq!(
        arm.matches("Method::").count(),
        arm.matches("Method::Get").count(),
        "ArmClient sends something else than GET: the table below assumes reads"
    );

    let all: String = sources.values().cloned().collect();
    let mut derived: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for call in arm_calls(&all) {
        let mut path = call.path.clone();
        for (variable, definition, expansion) in ARM_PATH_VARIABLES {
            if path.contains(&format!("{{{variable}}}")) {
                assert!(
                    all.contains(definition),
                    "`{variable}` is no longer defined as this test expands it ({definition})"
                );
                path = path.replace(&format!("{{{variable}}}"), expansion);
            }
        }
        assert!(
            !path.contains('{'),
            "{}: unexpanded path {path}",
            call.operation
        );
        let mut actions = BTreeSet::from([read_action(&path)]);
        if call.query.contains("(\"$expand\",\"instanceView\")") {
            actions.insert(read_action(&format!("{}/instanceView", item_path(&path))));
        }
        eprintln!("ARM {} GET {path} -> {actions:?}", call.operation);
        derived.entry(call.operation).or_default().extend(actions);
    }
    assert!(derived.len() >= 5, "found only {derived:?}");
    let table: BTreeMap<String, BTreeSet<String>> = ARM_CALLS
        .iter()
        .map(|(op, actions)| (op.to_string(), set(actions.iter().copied())))
        .collect();
    same_sets(
        "ARM operations (a new call needs a row in ARM_CALLS and its action in deploy/examples/azure/custom-role.json)",
        "providers/azure/src",
        &derived.keys().cloned().collect(),
        "ARM_CALLS",
        &table.keys().cloned().collect(),
    );
    for (op, actions) in &derived {
        assert_eq!(
            Some(actions),
            table.get(op),
            "{op}: the actions its path needs"
        );
    }

    // Storage queue calls: the methods of the SDK's QueueClient the feed uses.
    let mut queue_methods = BTreeSet::new();
    for dir in dependency_dirs("azure_storage_queue") {
        for file in [
            "src/clients/queue_client.rs",
            "src/generated/clients/queue_client.rs",
        ] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            for line in text.lines() {
                if let Some(rest) = line.trim().strip_prefix("pub async fn ") {
                    queue_methods.insert(
                        rest.chars()
                            .take_while(|c| is_ident(*c))
                            .collect::<String>(),
                    );
                }
            }
        }
    }
    assert!(
        queue_methods.contains("receive_messages"),
        "{queue_methods:?}"
    );
    let used: BTreeSet<String> = method_calls(&all)
        .into_iter()
        .filter(|m| queue_methods.contains(m))
        .collect();
    same_sets(
        "Storage queue calls (a new one needs a row in QUEUE_CALLS and a role that grants it)",
        "providers/azure/src",
        &used,
        "QUEUE_CALLS",
        &set(QUEUE_CALLS.iter().map(|(m, _)| *m)),
    );

    // The custom role: exactly the table's actions (RBAC compares them
    // case-insensitively), nothing on data.
    let role = json("deploy/examples/azure/custom-role.json");
    let granted = lower(
        role["Actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string()),
    );
    assert!(granted.iter().all(|a| !a.contains('*')), "{granted:?}");
    let needed = lower(
        ARM_CALLS
            .iter()
            .flat_map(|(_, a)| a.iter().map(|a| a.to_string())),
    );
    same_sets(
        "RBAC actions (least privilege: exactly what the calls need)",
        "ARM_CALLS",
        &needed,
        "deploy/examples/azure/custom-role.json",
        &granted,
    );
    for key in ["NotActions", "DataActions", "NotDataActions"] {
        assert_eq!(role[key], serde_json::json!([]), "{key}");
    }

    // setup.sh creates that role and scopes it to the mirror's resource
    // group, and gives the queue's role on the queue only.
    let script = read("deploy/examples/azure/setup.sh");
    let name = role["Name"].as_str().unwrap();
    assert!(
        script.contains(&format!("--role \"{name}\"")),
        "setup.sh does not assign {name}"
    );
    let mirror = yaml("deploy/examples/azure/mirror.yaml");
    let azure = &mirror["spec"]["provider"]["azure"];
    let scope = format!(
        "/subscriptions/{}/resourceGroups/{}",
        azure["subscriptionId"].as_str().unwrap(),
        azure["resourceGroup"].as_str().unwrap()
    );
    assert_eq!(role["AssignableScopes"], serde_json::json!([scope]));
    assert!(
        script.contains(&format!("s#{scope}#")),
        "setup.sh does not rewrite the scope {scope}"
    );
    for (_, queue_role) in QUEUE_CALLS {
        let assignment = shell_commands(&script)
            .into_iter()
            .find(|c| c.contains(&format!("--role \"{queue_role}\"")))
            .unwrap_or_else(|| panic!("setup.sh does not assign {queue_role}"));
        assert!(
            assignment.contains("--scope \"$storage_id/queueServices/default/queues/$QUEUE\""),
            "{assignment}"
        );
    }

    // The workload identity is meshmirror's own ServiceAccount.
    let (namespace, sa_name) = installed_service_account();
    let sa = yaml("deploy/examples/azure/workload-identity-service-account.yaml");
    assert_eq!(sa["metadata"]["namespace"], namespace.as_str());
    assert_eq!(sa["metadata"]["name"], sa_name.as_str());
    let vars = shell_vars(&script);
    assert_eq!(vars["NAMESPACE"], format!("${{NAMESPACE:-{namespace}}}"));
    assert_eq!(vars["SA"], format!("${{SA:-{sa_name}}}"));
}

#[test]
fn arm_paths_name_their_actions() {
    assert_eq!(
        read_action(
            "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/v/virtualMachines"
        ),
        "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read"
    );
    assert_eq!(
        read_action(
            "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/publicIPAddresses"
        ),
        "Microsoft.Network/publicIPAddresses/read"
    );
    let calls = arm_calls(&squeeze(
        r#"let x = self
            .arm
            .list(
                "a.list",
                &format!("{set_path}/networkInterfaces"),
                &[("api-version", V)],
            )
            .await?;
        let n = self.arm.calls();
        let y = self.arm.get("a.get", &set_path, &[("api-version", V), ("$expand", "instanceView")]);"#,
    ));
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].path, "{set_path}/networkInterfaces");
    assert_eq!(calls[1].path, "{set_path}");
    assert!(calls[1].query.contains("instanceView"));
}

// ---------------------------------------------------------------- GCP

/// Every Compute Engine call (client type, method) and the IAM permission
/// that authorizes it (regional groups use the zonal permission names).
const GCP_CALLS: &[(&str, &str, &str)] = &[
    (
        "InstanceGroupManagers",
        "list_managed_instances",
        "compute.instanceGroupManagers.get",
    ),
    (
        "RegionInstanceGroupManagers",
        "list_managed_instances",
        "compute.instanceGroupManagers.get",
    ),
    ("Instances", "list", "compute.instances.list"),
    ("Instances", "aggregated_list", "compute.instances.list"),
];

/// The Pub/Sub clients of the event feed, and the role they need on the
/// subscription (granted apart from the custom role, see docs/gcp.md).
const PUBSUB_CLIENTS: &[(&str, &str)] = &[("Subscriber", "roles/pubsub.subscriber")];

/// The types a squeezed source imports from `module` (`use module::{A, B};`
/// or `use module::A;`).
fn imported(src: &str, module: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in src.match_indices(&format!("use{module}::")) {
        let tail = &src[i + "use".len() + module.len() + 2..];
        let list = match tail.strip_prefix('{') {
            Some(t) => &t[..t.find('}').unwrap()],
            None => &tail[..tail.find(';').unwrap()],
        };
        out.extend(
            list.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    out
}

/// The public methods of a client type in google-cloud-compute-v1.
fn compute_methods(client: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dir in dependency_dirs("google-cloud-compute-v1") {
        let text = std::fs::read_to_string(dir.join("src/client.rs")).unwrap();
        let start = text
            .find(&format!("\nimpl {client} {{"))
            .unwrap_or_else(|| panic!("no impl {client}"));
        let body = &text[start + 1..];
        let end = body[1..].find("\nimpl ").map_or(body.len(), |e| e + 1);
        for line in body[..end].lines() {
            if let Some(rest) = line.trim().strip_prefix("pub fn ") {
                out.insert(rest.chars().take_while(|c| is_ident(*c)).collect());
            }
        }
    }
    out
}

#[test]
fn gcp_role_allows_exactly_what_the_provider_calls() {
    let sources = squeezed_sources("providers/gcp/src");
    let all: String = sources.values().cloned().collect();

    // The compute clients: every one imported is a field of `Clients`, and
    // every call goes through those fields.
    let provider = &sources["providers/gcp/src/provider.rs"];
    let start = provider.find("structClients{").expect("struct Clients") + "structClients{".len();
    let fields: BTreeMap<String, String> = provider
        [start..start + provider[start..].find('}').unwrap()]
        .split(',')
        .filter(|f| !f.is_empty())
        .map(|f| {
            let (name, ty) = f.split_once(':').unwrap();
            (name.to_string(), ty.to_string())
        })
        .collect();
    same_sets(
        "compute clients",
        "use google_cloud_compute_v1::client",
        &imported(&all, "google_cloud_compute_v1::client"),
        "struct Clients",
        &fields.values().cloned().collect(),
    );
    let mut called = BTreeSet::new();
    for (field, ty) in &fields {
        let receiver = format!("clients.{field}.");
        let methods = compute_methods(ty);
        for (i, _) in all.match_indices(&receiver) {
            let tail = &all[i + receiver.len()..];
            let method: String = tail.chars().take_while(|c| is_ident(*c)).collect();
            assert!(
                methods.contains(&method),
                "{ty}.{method} is not a method of the compute client"
            );
            called.insert(format!("{ty}.{method}"));
        }
    }
    // Every method called on a client field is a counted call (none escapes
    // the scan through another receiver).
    for field in fields.keys() {
        let via = format!(".{field}.");
        let uses = all
            .match_indices(&via)
            .filter(|(i, _)| {
                let tail = &all[i + via.len()..];
                let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
                end > 0 && tail[end..].starts_with('(')
            })
            .count();
        let calls = all.matches(&format!("clients.{field}.")).count();
        assert_eq!(
            uses, calls,
            "`{field}` is used other than as `clients.{field}.method()`"
        );
    }
    same_sets(
        "Compute calls (a new call needs a row in GCP_CALLS and its permission in deploy/examples/gcp/iam-role.yaml)",
        "providers/gcp/src",
        &called,
        "GCP_CALLS",
        &GCP_CALLS
            .iter()
            .map(|(t, m, _)| format!("{t}.{m}"))
            .collect(),
    );

    let role = yaml("deploy/examples/gcp/iam-role.yaml");
    let granted: BTreeSet<String> = role["includedPermissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    same_sets(
        "IAM permissions (least privilege: exactly what the calls need)",
        "GCP_CALLS",
        &set(GCP_CALLS.iter().map(|(_, _, p)| *p)),
        "deploy/examples/gcp/iam-role.yaml",
        &granted,
    );

    // Pub/Sub: only a subscriber, and the docs grant its role on the subscription.
    same_sets(
        "Pub/Sub clients",
        "use google_cloud_pubsub::client",
        &imported(&all, "google_cloud_pubsub::client"),
        "PUBSUB_CLIENTS",
        &set(PUBSUB_CLIENTS.iter().map(|(c, _)| *c)),
    );
    let docs = read("docs/gcp.md").replace("\\\n", " ");
    for (client, role) in PUBSUB_CLIENTS {
        let granted = docs.lines().any(|l| {
            let l = l.split_whitespace().collect::<Vec<_>>().join(" ");
            l.contains("gcloud pubsub subscriptions add-iam-policy-binding")
                && l.contains(&format!("--role {role}"))
        });
        assert!(
            granted,
            "docs/gcp.md does not grant {role} (for {client}) on the subscription"
        );
    }

    // The workload identity is meshmirror's own ServiceAccount.
    let (namespace, name) = installed_service_account();
    let sa = yaml("deploy/examples/gcp/workload-identity-service-account.yaml");
    assert_eq!(sa["metadata"]["namespace"], namespace.as_str());
    assert_eq!(sa["metadata"]["name"], name.as_str());
    assert!(
        docs.contains(&format!(".svc.id.goog[{namespace}/{name}]")),
        "docs/gcp.md binds another Kubernetes service account"
    );
}

#[test]
fn call_scans_find_calls_across_lines() {
    let src = squeeze(
        "let x = client\n    .describe_instances()\n    .filters(f)\n    // .describe_tags()\n    .send();",
    );
    assert_eq!(
        method_calls(&src),
        vec!["describe_instances", "filters", "send"]
    );
    assert_eq!(
        imported(&squeeze("use a::b::{C, D};\nuse a::b::E;"), "a::b"),
        set(["C", "D", "E"])
    );
}
