//! What the suites against the run's real control plane and istiod share
//! (tests/istiod.rs, tests/istiod_bench.rs, tests/istioctl.rs): the test's
//! id and namespace names on the shared control plane, and a pod's sidecar
//! as an xDS client. Included with `#[path]`, so it is not a suite.

#![allow(dead_code)]

use meshmirror_testkit::xds::istiod::HOW_TO_RUN;
use meshmirror_testkit::xds::{Istiod, ProxyNode, XdsClient};
use meshmirror_testkit::{Backend, TestKube};

use super::common::Harness;

/// Fails the test, saying how to run `suite`, off the real backend.
pub fn require_real_backend(suite: &str) {
    if Backend::of_run() != Backend::Real {
        panic!(
            "this test needs MESHMIRROR_KUBE=real: {}",
            HOW_TO_RUN.replace("--test istiod", &format!("--test {suite}"))
        );
    }
}

/// The prefix the test kit's proxy gives the test's namespaces on the
/// server (`<id>-`).
pub fn server_prefix(h: &Harness) -> String {
    match &h.server {
        TestKube::Real(proxy) => proxy.namespace_prefix().to_string(),
        TestKube::Fake(_) => unreachable!("these suites refuse the fake backend"),
    }
}

/// The test's own id on the shared control plane.
pub fn test_id(h: &Harness) -> String {
    server_prefix(h).trim_end_matches('-').to_string()
}

/// A namespace name for the mirror that no other test (of this run or an
/// earlier one on the same control plane) uses: `base-<the test's id>`. A
/// ServiceEntry's default host is made from it and seen by the whole mesh.
pub fn unique_ns(h: &Harness, base: &str) -> String {
    format!("{base}-{}", test_id(h))
}

/// The server's name of the test's namespace `ns`.
pub fn server_ns(h: &Harness, ns: &str) -> String {
    format!("{}{ns}", server_prefix(h))
}

/// A sidecar of a pod in namespace `client` (another namespace than the
/// mirror's), on the default network.
pub async fn pod_client(h: &Harness, istiod: &Istiod) -> XdsClient {
    h.create_namespace("client").await;
    let ns = server_ns(h, "client");
    XdsClient::connect(
        istiod.xds,
        ProxyNode::pod(
            "10.244.0.10",
            "sleep-7d9f",
            &ns,
            &[("app", "sleep")],
            "sleep",
        ),
    )
    .await
}
