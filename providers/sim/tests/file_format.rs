//! The sim file format is a contract: the README's example, a fixture using every
//! field, its defaults, and errors that name the field.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use meshmirror_provider::{Health, InstanceState};
use meshmirror_sim::{SimCloud, SimError, SimFile, SimFileGroup, SimInstance};

const README: &str = include_str!("../README.md");
const FIXTURE: &str = include_str!("../fixtures/two-groups.yaml");

/// The first ```yaml block of the README.
fn readme_example() -> &'static str {
    let start = README.find("```yaml\n").expect("README has a yaml block") + "```yaml\n".len();
    let len = README[start..].find("```").expect("yaml block is closed");
    &README[start..start + len]
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_readme_example_is_the_issue_example_and_parses_to_its_instance() {
    let example = readme_example();
    assert!(example.contains("privateIPv4: 10.0.1.5"), "{example}");
    let file = SimFile::parse(example).unwrap();
    let want = SimFile {
        groups: BTreeMap::from([(
            "web".to_string(),
            SimFileGroup {
                region: "us-east-1".into(),
                instances: vec![SimInstance {
                    id: "i-0a1".into(),
                    private_ipv4: Some(Ipv4Addr::new(10, 0, 1, 5)),
                    public_ipv4: Some(Ipv4Addr::new(203, 0, 113, 5)),
                    ipv6: Some("2001:db8::5".parse().unwrap()),
                    zone: Some("us-east-1a".into()),
                    state: InstanceState::Running,
                    health: Health::Healthy,
                    tags: tags(&[("team", "payments")]),
                }],
            },
        )]),
    };
    assert_eq!(file, want);
}

#[test]
fn the_fixture_parses_with_defaults_filled_in() {
    let file = SimFile::parse(FIXTURE).unwrap();
    assert_eq!(
        file.groups.keys().collect::<Vec<_>>(),
        ["batch", "empty", "web"]
    );
    assert_eq!(file.groups["batch"].region, "eu-west-1");
    assert!(file.groups["batch"].instances.is_empty());
    assert!(file.groups["empty"].instances.is_empty());

    let web = &file.groups["web"].instances;
    assert_eq!(
        web.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["i-0a1", "i-0a2", "i-0a3", "i-0a4"],
        "file order is kept"
    );
    assert_eq!(
        web[0].tags,
        tags(&[("team", "payments"), ("tier", "frontend")])
    );
    // i-0a2 leaves out every optional field.
    assert_eq!(
        web[1],
        SimInstance::running("i-0a2", Ipv4Addr::new(10, 0, 2, 7)).with_zone("us-east-1b")
    );
    assert_eq!(
        (web[2].state, web[2].health),
        (InstanceState::Pending, Health::Unhealthy)
    );
    assert_eq!(web[3].state, InstanceState::Terminating);
    assert_eq!(
        web[3].ipv6,
        Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xb))
    );
    assert_eq!(web[3].public_ipv4, None);
}

#[test]
fn unquoted_scalar_tag_values_are_read_as_strings() {
    let file = SimFile::parse(&instance_with("tags: {version: 2, canary: true}")).unwrap();
    assert_eq!(
        file.groups["web"].instances[2].tags,
        tags(&[("version", "2"), ("canary", "true")])
    );
}

#[tokio::test]
async fn the_fixture_loads_into_a_cloud_with_regions_on_every_instance() {
    use meshmirror_provider::{GroupRef, Provider};
    let sim = SimCloud::from_yaml(FIXTURE).unwrap();
    let web = sim
        .members(&GroupRef::Sim {
            group: "web".into(),
        })
        .await
        .unwrap();
    assert_eq!(web.len(), 4);
    assert!(web.iter().all(|i| i.region.as_deref() == Some("us-east-1")));
    assert!(web.iter().all(|i| i.lifecycle.is_none()));
    assert_eq!(sim.group_names(), ["batch", "empty", "web"]);
}

fn instance_with(field: &str) -> String {
    format!(
        "groups:\n  web:\n    region: us-east-1\n    instances:\n      - id: i-1\n        privateIPv4: 10.0.0.1\n        zone: us-east-1a\n      - id: i-2\n        privateIPv4: 10.0.0.2\n        zone: us-east-1a\n      - id: i-3\n        privateIPv4: 10.0.0.3\n        zone: us-east-1a\n        {field}\n"
    )
}

fn error_of(yaml: &str) -> String {
    match SimFile::parse(yaml) {
        Err(SimError::Invalid(msg)) => msg,
        other => panic!("expected an Invalid error for\n{yaml}\ngot {other:?}"),
    }
}

#[test]
fn a_misspelt_state_names_the_field_and_the_choices() {
    let msg = error_of(&instance_with("state: Runing"));
    assert!(
        msg.starts_with(
            "groups.web.instances[2].state: unknown variant \"Runing\", expected one of Pending, Running, Terminating"
        ),
        "{msg}"
    );
}

#[test]
fn bad_values_and_unknown_fields_name_the_field() {
    let cases: Vec<(String, &str)> = vec![
        (instance_with("stat: Running"), "groups.web.instances[2]"),
        (instance_with("stat: Running"), "unknown field `stat`"),
        (instance_with("state: Stopped"), "groups.web.instances[2].state: unknown variant \"Stopped\""),
        (instance_with("healthy: yes"), "groups.web.instances[2].healthy: invalid type"),
        (instance_with("publicIPv4: 203.0.113.300"), "groups.web.instances[2].publicIPv4: invalid IPv4"),
        (instance_with("ipv6: 10.0.0.1"), "groups.web.instances[2].ipv6: invalid IPv6"),
        (instance_with("tags: {version: [2]}"), "groups.web.instances[2].tags.version: invalid type: sequence"),
        (instance_with("tags: {a: x, a: y}"), "groups.web.instances[2].tags: duplicate key \"a\""),
        (instance_with("tags: [a, b]"), "groups.web.instances[2].tags: invalid type: sequence"),
        (
            "groups:\n  web:\n    region: us-east-1\n    instances:\n      - id: i-1\n        privateIPv4: 10.0.0.256\n        zone: a\n".into(),
            "groups.web.instances[0].privateIPv4: invalid IPv4",
        ),
        (
            "groups:\n  web:\n    region: us-east-1\n    instances:\n      - privateIPv4: 10.0.0.1\n        zone: a\n".into(),
            "groups.web.instances[0]: missing field `id`",
        ),
        (
            "groups:\n  web:\n    region: us-east-1\n    instances:\n      - id: i-1\n        zone: a\n".into(),
            "groups.web.instances[0]: missing field `privateIPv4`",
        ),
        (
            "groups:\n  web:\n    region: us-east-1\n    instances:\n      - id: i-1\n        privateIPv4: 10.0.0.1\n".into(),
            "groups.web.instances[0]: missing field `zone`",
        ),
        ("groups:\n  web:\n    instances: []\n".into(), "groups.web: missing field `region`"),
        (
            "groups:\n  web:\n    region: r\n    terminationHook: true\n".into(),
            "unknown field `terminationHook`",
        ),
        ("groups: {}\nversion: 1\n".into(), "unknown field `version`"),
        ("groups: []\n".into(), "groups: invalid type: sequence, expected a map"),
        ("{}\n".into(), "missing field `groups`"),
        ("groups:\n  web:\n    region: \"\"\n".into(), "groups.web.region: must not be empty"),
        (instance_with("").replace("id: i-3", "id: \"\""), "groups.web.instances[2].id: must not be empty"),
        (
            instance_with("").replace("id: i-3", "id: i-1"),
            "groups.web.instances[2].id: duplicate id \"i-1\", already used at groups.web.instances[0]",
        ),
        (
            "groups:\n  a:\n    region: r\n    instances: [{id: i-1, privateIPv4: 10.0.0.1, zone: z}]\n  b:\n    region: r\n    instances: [{id: i-1, privateIPv4: 10.0.0.2, zone: z}]\n".into(),
            "groups.b.instances[0].id: duplicate id \"i-1\", already used at groups.a.instances[0]",
        ),
    ];
    for (yaml, want) in cases {
        let msg = error_of(&yaml);
        assert!(
            msg.contains(want),
            "want {want:?} in error {msg:?} for\n{yaml}"
        );
    }
}

#[test]
fn the_same_group_twice_is_refused() {
    let msg = error_of("groups:\n  web:\n    region: a\n  web:\n    region: b\n");
    assert!(msg.starts_with("groups: duplicate key \"web\""), "{msg}");
}

#[test]
fn a_refused_file_leaves_the_cloud_as_it_was() {
    let sim = SimCloud::from_yaml(FIXTURE).unwrap();
    let before = sim.instances("web").unwrap();
    let err = sim
        .replace_from_yaml(&instance_with("state: Runing"))
        .unwrap_err();
    assert!(
        err.to_string().starts_with("invalid sim file: groups.web"),
        "{err}"
    );
    assert_eq!(sim.instances("web").unwrap(), before);
    assert_eq!(sim.group_names(), ["batch", "empty", "web"]);
}
