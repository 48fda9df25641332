//! A real Kubernetes control plane for a test: etcd, kube-apiserver and
//! kube-controller-manager built from their Go modules (`tests/kube/`),
//! started on 127.0.0.1 in a state directory of the test's own, with
//! Istio's and meshmirror's CRDs installed, and stopped when dropped.
//! Starting takes about 12 s and 600 MiB, so a test file keeps the number of
//! tests that need one small.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::tools::{self, Tool};

/// The repository's root (this crate is `tests/support`).
///
/// Found at run time from the running test's package directory (cargo and
/// nextest set `CARGO_MANIFEST_DIR`), not the one this crate was compiled
/// in: a target directory shared by two checkouts may hold a build of the
/// other one.
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    start
        .ancestors()
        .find(|dir| dir.join("tests/kube/up.sh").is_file())
        .map(Path::to_path_buf)
        .unwrap_or(start)
}

/// A running control plane; stopped (and its state removed) on drop.
pub struct RealKube {
    state: PathBuf,
    kubeconfig: PathBuf,
    /// Started by this process (and stopped on drop), or shared by the run.
    owned: bool,
}

/// The variable naming the state directory of a control plane shared by a
/// whole test run (`tests/kube/up.sh DIR`; `scripts/test.sh` starts one).
pub const SHARED_ENV: &str = "MESHMIRROR_KUBE_SHARED";

impl RealKube {
    /// Starts a control plane of its own. Panics, failing the test, when
    /// the programs are not built or it does not come up (with up.sh's
    /// output, which names the step and the log to read).
    pub fn start() -> RealKube {
        tools::require(Tool::RealKube);
        let state = std::env::temp_dir().join(format!(
            "meshmirror-kube-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let out = Command::new("bash")
            .arg(repo_root().join("tests/kube/up.sh"))
            .arg(&state)
            .stdin(Stdio::null())
            .output()
            .expect("bash runs tests/kube/up.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        // A half-started cluster is stopped by up.sh itself on failure.
        assert!(
            out.status.success(),
            "tests/kube/up.sh {} failed ({}):\n{}",
            state.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let kubeconfig = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(
            kubeconfig.is_file(),
            "up.sh printed no kubeconfig: {stdout}"
        );
        RealKube {
            state,
            kubeconfig,
            owned: true,
        }
    }

    /// The control plane shared by this test run (see [`SHARED_ENV`]); left
    /// running when dropped. Panics, failing the test, when none is named or
    /// it has no admin kubeconfig.
    pub fn shared() -> RealKube {
        let Some(state) = std::env::var_os(SHARED_ENV).map(PathBuf::from) else {
            panic!(
                "the real backend (MESHMIRROR_KUBE=real) needs a running control plane: scripts/test.sh \
                 starts one; by hand, run `tests/kube/up.sh DIR` and set {SHARED_ENV}=DIR"
            );
        };
        let kubeconfig = state.join("admin.kubeconfig");
        assert!(
            kubeconfig.is_file(),
            "{SHARED_ENV}={} has no admin.kubeconfig: start it with tests/kube/up.sh {}",
            state.display(),
            state.display()
        );
        RealKube {
            state,
            kubeconfig,
            owned: false,
        }
    }

    /// The admin kubeconfig (group system:masters).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client with the admin's rights.
    pub async fn admin(&self) -> Client {
        client_from(&self.kubeconfig).await
    }

    /// A client that authenticates with `token` (a ServiceAccount's, say),
    /// trusting this cluster's CA.
    pub async fn client_with_token(&self, token: &str) -> Client {
        token_client(&self.kubeconfig, token)
            .await
            .expect("a client with a token")
    }

    /// Runs kubectl against this cluster as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        tools::require(Tool::Kubectl);
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.state.join("kubectl-cache"))
            .args(args)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .output()
            .expect("kubectl runs")
    }

    /// Runs kubectl and panics with its output unless it succeeds; returns
    /// (stdout, stderr).
    pub fn kubectl_ok(&self, args: &[&str]) -> (String, String) {
        let out = self.kubectl(args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "kubectl {} failed ({}):\n{stdout}\n{stderr}",
            args.join(" "),
            out.status
        );
        (stdout, stderr)
    }
}

impl Drop for RealKube {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("bash")
            .arg(repo_root().join("tests/kube/down.sh"))
            .arg(&self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// A client of the cluster of the admin kubeconfig at `path` that
/// authenticates with `token` instead of the admin's certificate.
pub async fn token_client(path: &Path, token: &str) -> Result<Client, kube::Error> {
    let mut config = Kubeconfig::read_from(path).map_err(kube::Error::InferKubeconfig)?;
    for user in &mut config.auth_infos {
        if let Some(auth) = &mut user.auth_info {
            *auth = kube::config::AuthInfo {
                token: Some(token.to_string().into()),
                ..Default::default()
            };
        }
    }
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(kube::Error::InferKubeconfig)?;
    Client::try_from(config)
}

async fn client_from(path: &Path) -> Client {
    let config = Kubeconfig::read_from(path).expect("a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .expect("a client config");
    Client::try_from(config).expect("a client")
}
