//! The istiod of the control plane shared by a test run: `pilot-discovery
//! discovery` (tests/istiod/) against the real API server of
//! `MESHMIRROR_KUBE_SHARED`, started by the first test that asks for it and
//! used by every later one.
//!
//! nextest runs each test in a process of its own, so "once per run" comes
//! from the state dir, not from a static: under an exclusive lock on
//! `STATE/istiod.lock` a test reads `STATE/istiod.env` and checks that its
//! pid still runs pilot-discovery and answers `/ready`; if not, it runs
//! `tests/istiod/up.sh STATE` (about 10 s) before it lets go of the lock.
//! `tests/kube/down.sh STATE` (and so `scripts/test.sh`'s teardown) stops it.
//!
//! Tests never build istiod: without a build (`tests/istiod/build.sh
//! --check`) they fail and name the install command.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::backend::{BACKEND_ENV, Backend};
use crate::realkube::{SHARED_ENV, repo_root};

/// How to run the suites that need istiod, for their failure message.
pub const HOW_TO_RUN: &str = "istiod runs only against a real control plane: run scripts/test.sh \
    (its real pass starts one and runs this suite), or by hand: \
    state=$(mktemp -d /tmp/mm-kube.XXXX); tests/kube/up.sh $state; \
    MESHMIRROR_KUBE=real MESHMIRROR_KUBE_SHARED=$state cargo nextest run --test istiod; \
    tests/kube/down.sh $state (which stops istiod too)";

/// A running istiod; left running when dropped (the run's teardown stops it).
#[derive(Clone, Debug)]
pub struct Istiod {
    /// The plaintext xDS (gRPC) address.
    pub xds: SocketAddr,
    /// The HTTP address: `/ready` and the `/debug/...` pages.
    pub http: SocketAddr,
    pub pid: u32,
    state: PathBuf,
}

impl Istiod {
    /// The run's istiod, started now if it is not running yet. Panics,
    /// failing the test, when the run is not on the real backend, when
    /// istiod is not built, or when it does not start (with up.sh's output).
    pub async fn shared() -> Istiod {
        match tokio::task::spawn_blocking(Istiod::shared_blocking).await {
            Ok(istiod) => istiod,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("starting istiod: {e}"),
        }
    }

    /// [`Istiod::shared`] for code outside a runtime.
    pub fn shared_blocking() -> Istiod {
        if Backend::of_run() != Backend::Real {
            panic!("this test needs {BACKEND_ENV}=real: {HOW_TO_RUN}");
        }
        let Some(state) = std::env::var_os(SHARED_ENV).map(PathBuf::from) else {
            panic!(
                "this test needs {SHARED_ENV} (the state dir of tests/kube/up.sh): {HOW_TO_RUN}"
            );
        };
        assert!(
            state.join("admin.kubeconfig").is_file(),
            "{SHARED_ENV}={} has no admin.kubeconfig: start the control plane with tests/kube/up.sh {}",
            state.display(),
            state.display()
        );
        let lock_path = state.join("istiod.lock");
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", lock_path.display()));
        lock.lock()
            .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
        if let Some(running) = Istiod::running(&state) {
            return running;
        }
        let started = Istiod::start_on(&state);
        drop(lock);
        started
    }

    /// Starts istiod (tests/istiod/up.sh) on the control plane that
    /// tests/kube/up.sh runs in `state`; tests/kube/down.sh stops both.
    /// Panics, failing the test, when istiod is not built or does not start.
    pub fn start_on(state: &Path) -> Istiod {
        let bin = built().unwrap_or_else(|why| {
            panic!(
                "this test needs istiod (pilot-discovery) and it is not built ({why}); install it with \
                 scripts/install-test-tools.sh (tests/istiod/build.sh: Go 1.26 and the Go module proxy; \
                 about 10 minutes cold)"
            )
        });
        let out = Command::new("bash")
            .arg(repo_root().join("tests/istiod/up.sh"))
            .arg(state)
            .env("MESHMIRROR_ISTIOD_BIN", &bin)
            .stdin(Stdio::null())
            .output()
            .expect("bash runs tests/istiod/up.sh");
        assert!(
            out.status.success(),
            "tests/istiod/up.sh {} failed ({}):\n{}",
            state.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Istiod::running(state).unwrap_or_else(|| {
            panic!(
                "tests/istiod/up.sh {} succeeded but istiod is not running; see {}",
                state.display(),
                state.join("logs/istiod.log").display()
            )
        })
    }

    /// The istiod that `STATE/istiod.env` names, if its pid runs
    /// pilot-discovery and its `/ready` answers 200.
    pub fn running(state: &Path) -> Option<Istiod> {
        let env = std::fs::read_to_string(state.join("istiod.env")).ok()?;
        let var = |name: &str| {
            env.lines().find_map(|line| {
                line.trim()
                    .strip_prefix("export ")
                    .unwrap_or(line)
                    .strip_prefix(&format!("{name}="))
                    .map(str::to_string)
            })
        };
        let istiod = Istiod {
            xds: var("ISTIOD_XDS")?.parse().ok()?,
            http: var("ISTIOD_HTTP")?.parse().ok()?,
            pid: var("ISTIOD_PID")?.parse().ok()?,
            state: state.to_path_buf(),
        };
        let exe = std::fs::read_link(format!("/proc/{}/exe", istiod.pid)).ok()?;
        let exe = exe.to_string_lossy();
        if !exe
            .trim_end_matches(" (deleted)")
            .ends_with("/pilot-discovery")
        {
            return None;
        }
        matches!(istiod.get("/ready"), Ok((200, _))).then_some(istiod)
    }

    /// istiod's log file.
    pub fn log(&self) -> PathBuf {
        self.state.join("logs/istiod.log")
    }

    /// GET `path` on istiod's HTTP port (`/ready`, `/debug/...`): the status
    /// code and body.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let mut conn = TcpStream::connect_timeout(&self.http, Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            conn,
            "GET {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        )?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((code, body.to_string()))
    }

    /// The JSON of a `/debug/...` page; panics with the answer otherwise.
    pub fn debug_json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self
            .get(path)
            .unwrap_or_else(|e| panic!("GET {path} from istiod at {}: {e}", self.http));
        assert_eq!(code, 200, "GET {path} from istiod: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} from istiod is not JSON ({e}): {body}"))
    }
}

/// `istioctl` of the same build as istiod (`tests/istiod/build.sh` builds
/// both into one bin dir). Panics, failing the test, when it is not built,
/// naming the install script; tests never build it.
pub fn istioctl() -> PathBuf {
    let istioctl = built().map(|bin| bin.join("istioctl")).and_then(|path| {
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{} is missing", path.display()))
        }
    });
    istioctl.unwrap_or_else(|why| {
        panic!(
            "this test needs istioctl and it is not built ({why}); install it with \
             scripts/install-test-tools.sh (tests/istiod/build.sh builds it with istiod)"
        )
    })
}

/// The bin dir of a current build (`tests/istiod/build.sh --check`).
fn built() -> Result<PathBuf, String> {
    let bin = crate::tools::checked_build("tests/istiod/build.sh")?;
    let discovery = bin.join("pilot-discovery");
    if discovery.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} is missing", discovery.display()))
    }
}
