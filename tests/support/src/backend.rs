//! The Kubernetes a test talks to, chosen per run: the test kit's own server
//! (`MESHMIRROR_KUBE=fake`, the default) or the control plane shared by the
//! run behind a proxy that counts, injects faults and gives the test
//! namespaces of its own (`MESHMIRROR_KUBE=real`). Both offer the same
//! test-facing API.

use std::net::SocketAddr;
use std::path::Path;

use crate::apiserver::{ApiServer, Faults, LoggedWrite, RequestCounts};
use crate::kubeproxy::KubeProxy;
use crate::realkube::RealKube;

/// The variable that picks the backend.
pub const BACKEND_ENV: &str = "MESHMIRROR_KUBE";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Fake,
    Real,
}

impl Backend {
    /// The run's backend. Panics on a value other than `fake` or `real`:
    /// a typo must not quietly run the other one.
    pub fn of_run() -> Backend {
        match std::env::var(BACKEND_ENV).as_deref() {
            Err(_) | Ok("") | Ok("fake") => Backend::Fake,
            Ok("real") => Backend::Real,
            Ok(other) => panic!("{BACKEND_ENV}={other}: use `fake` (the default) or `real`"),
        }
    }
}

/// A test's Kubernetes API server.
pub enum TestKube {
    Fake(ApiServer),
    Real(KubeProxy),
}

impl TestKube {
    /// On the run's backend; `fake` is built by `fake` (with the CRDs the
    /// test needs). The real control plane has Istio's and meshmirror's
    /// CRDs installed already.
    pub async fn start(fake: impl AsyncFnOnce() -> ApiServer) -> TestKube {
        match Backend::of_run() {
            Backend::Fake => TestKube::Fake(fake().await),
            Backend::Real => TestKube::Real(
                KubeProxy::start(&RealKube::shared())
                    .await
                    .expect("the test kit's proxy listens on 127.0.0.1"),
            ),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            TestKube::Fake(_) => Backend::Fake,
            TestKube::Real(_) => Backend::Real,
        }
    }

    /// The test kit's server, when this is it (for what only it does).
    pub fn fake(&self) -> Option<&ApiServer> {
        match self {
            TestKube::Fake(s) => Some(s),
            TestKube::Real(_) => None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            TestKube::Fake(s) => s.addr(),
            TestKube::Real(p) => p.addr(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn client(&self) -> kube::Client {
        match self {
            TestKube::Fake(s) => s.client(),
            TestKube::Real(p) => p.client(),
        }
    }

    pub fn client_as(&self, agent: &str) -> kube::Client {
        match self {
            TestKube::Fake(s) => s.client_as(agent),
            TestKube::Real(p) => p.client_as(agent),
        }
    }

    /// The client the service under test runs with: on the real backend the
    /// shipped ServiceAccount and RBAC (a token from the TokenRequest API);
    /// the test kit's server has no authorization, so there the same as
    /// [`Self::client`] (or [`Self::client_as`] with an agent).
    pub async fn service_client(&self, agent: Option<&str>) -> kube::Client {
        match (self, agent) {
            (TestKube::Fake(s), None) => s.client(),
            (TestKube::Fake(s), Some(a)) => s.client_as(a),
            (TestKube::Real(p), agent) => p.service_client(agent).await,
        }
    }

    pub fn kubeconfig(&self) -> kube::config::Kubeconfig {
        match self {
            TestKube::Fake(s) => s.kubeconfig(),
            TestKube::Real(p) => p.kubeconfig(),
        }
    }

    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        match self {
            TestKube::Fake(s) => s.write_kubeconfig(path),
            TestKube::Real(p) => p.write_kubeconfig(path),
        }
    }

    pub fn requests(&self) -> RequestCounts {
        match self {
            TestKube::Fake(s) => s.requests(),
            TestKube::Real(p) => p.requests(),
        }
    }

    pub fn cluster_wide_requests(&self) -> RequestCounts {
        match self {
            TestKube::Fake(s) => s.cluster_wide_requests(),
            TestKube::Real(p) => p.cluster_wide_requests(),
        }
    }

    pub fn requests_from(&self, agent: &str) -> RequestCounts {
        match self {
            TestKube::Fake(s) => s.requests_from(agent),
            TestKube::Real(p) => p.requests_from(agent),
        }
    }

    pub fn write_log(&self) -> Vec<LoggedWrite> {
        match self {
            TestKube::Fake(s) => s.write_log(),
            TestKube::Real(p) => p.write_log(),
        }
    }

    pub fn reset_requests(&self) {
        match self {
            TestKube::Fake(s) => s.reset_requests(),
            TestKube::Real(p) => p.reset_requests(),
        }
    }

    pub fn faults(&self) -> Faults {
        match self {
            TestKube::Fake(s) => s.faults(),
            TestKube::Real(p) => p.faults(),
        }
    }
}
