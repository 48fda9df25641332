//! API calls per pass for groups of 10, 100 and 1,000 instances, zonal and
//! regional, against the test kit's GCE mock (the API's page size of 500).
//! `cargo bench -p meshmirror-gcp --bench api_calls`

#![allow(clippy::print_stdout)]

use std::time::Instant;

use meshmirror_gcp::{Auth, GcpConfig, GcpProvider};
use meshmirror_provider::{GcpLocation, GroupRef, Provider};
use meshmirror_testkit::gce::{GceMock, Template};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        println!(
            "{:<9} {:>9} {:>10} {:>12} {:>10}",
            "group", "instances", "API calls", "of them LMI", "pass ms"
        );
        for size in [10usize, 100, 1000] {
            for regional in [false, true] {
                let mock = GceMock::start().await.expect("mock");
                let (key, group) = if regional {
                    let key = mock.add_regional_group(
                        "proj",
                        "us-central1",
                        &["us-central1-a", "us-central1-b", "us-central1-c"],
                        "web",
                        Template::default(),
                    );
                    let group = GroupRef::Gcp {
                        project: "proj".into(),
                        location: GcpLocation::Region("us-central1".into()),
                        manager: "web".into(),
                    };
                    (key, group)
                } else {
                    let key =
                        mock.add_zonal_group("proj", "us-central1-a", "web", Template::default());
                    let group = GroupRef::Gcp {
                        project: "proj".into(),
                        location: GcpLocation::Zone("us-central1-a".into()),
                        manager: "web".into(),
                    };
                    (key, group)
                };
                mock.resize(&key, size);
                let provider = GcpProvider::new(GcpConfig {
                    endpoint: Some(mock.endpoint()),
                    auth: Auth::Anonymous,
                    ..GcpConfig::default()
                });
                // A warm-up pass builds the clients and connections.
                provider.members(&group).await.expect("members");
                mock.reset_counts();
                let started = Instant::now();
                let members = provider.members(&group).await.expect("members");
                let elapsed = started.elapsed();
                assert_eq!(members.len(), size);
                let lmi: u64 = mock
                    .counts()
                    .iter()
                    .filter(|(op, _)| op.ends_with("listManagedInstances"))
                    .map(|(_, n)| n)
                    .sum();
                println!(
                    "{:<9} {:>9} {:>10} {:>12} {:>10.1}",
                    if regional { "regional" } else { "zonal" },
                    size,
                    mock.total_calls(),
                    lmi,
                    elapsed.as_secs_f64() * 1000.0
                );
            }
        }
    });
}
