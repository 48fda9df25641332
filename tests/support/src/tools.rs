//! The external programs some tests start (emulators, CLIs), and one rule for
//! them: a test that needs a tool and cannot run it FAILS, with a message
//! naming the tool and how to install it. It never passes after printing
//! "skipped", because a skip that reports as a pass hides a missing check.
//!
//! `scripts/install-test-tools.sh` installs every tool and checks that each
//! runs. To leave the tool-bound tests out on purpose, filter them with
//! nextest, which then counts them as skipped in its summary (README,
//! "Testing").

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A program that some tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tool {
    /// moto's server (`moto_server`), the AWS emulator.
    Moto,
    /// Azurite's queue service (`azurite-queue`), the Azure Storage emulator.
    Azurite,
    /// The Google Cloud CLI (`gcloud`).
    Gcloud,
    /// The Pub/Sub emulator of the Cloud CLI (Java).
    PubSubEmulator,
    /// `kubectl`.
    Kubectl,
    /// kube-apiserver, kube-controller-manager and etcd, built by
    /// `tests/kube/build.sh` (see `crate::realkube`).
    RealKube,
    /// meshmirror as of the previous release, built by
    /// `scripts/build-previous-release.sh` (the upgrade test).
    PreviousRelease,
}

impl Tool {
    /// The program's name, as the failure names it.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Moto => "moto_server",
            Tool::Azurite => "azurite-queue",
            Tool::Gcloud => "gcloud",
            Tool::PubSubEmulator => "the Pub/Sub emulator (gcloud beta emulators pubsub)",
            Tool::Kubectl => "kubectl",
            Tool::RealKube => {
                "the real control plane (kube-apiserver, kube-controller-manager, etcd)"
            }
            Tool::PreviousRelease => "meshmirror as of the previous release",
        }
    }

    /// How to install it.
    pub fn install(self) -> &'static str {
        match self {
            Tool::Moto => {
                "scripts/install-test-tools.sh (pip install 'moto[server]==5.2.1'; it must be on PATH)"
            }
            Tool::Azurite => {
                "scripts/install-test-tools.sh (npm install azurite@3.35.0 into $HOME/.cache/meshmirror-tools; source scripts/env.sh to put it on PATH)"
            }
            Tool::Gcloud => "the Debian package google-cloud-cli (528)",
            Tool::PubSubEmulator => {
                "the Debian packages google-cloud-cli-pubsub-emulator (528) and openjdk-17-jre-headless"
            }
            Tool::Kubectl => "the Debian package kubectl (1.32 or newer)",
            Tool::RealKube => {
                "scripts/install-test-tools.sh (tests/kube/build.sh: Go 1.26 and the Go module proxy; about 15 minutes cold), plus the Debian packages openssl and curl"
            }
            Tool::PreviousRelease => {
                "scripts/install-test-tools.sh (scripts/build-previous-release.sh: about 3 minutes cold)"
            }
        }
    }

    /// Runs the tool's cheapest command; `Err` says what went wrong.
    fn probe(self) -> Result<(), String> {
        match self {
            Tool::Moto => run("moto_server", &["--help"]),
            Tool::Azurite => run("azurite-queue", &["--version"]),
            Tool::Gcloud => run("gcloud", &["version"]),
            Tool::PubSubEmulator => {
                run("java", &["-version"])?;
                let launcher = pubsub_launcher()?;
                if launcher.is_file() {
                    Ok(())
                } else {
                    Err(format!("{} is missing", launcher.display()))
                }
            }
            Tool::Kubectl => run("kubectl", &["version", "--client"]),
            Tool::RealKube => {
                let build = crate::realkube::repo_root().join("tests/kube/build.sh");
                run("bash", &[&build.to_string_lossy(), "--check"])?;
                run("openssl", &["version"])?;
                run("curl", &["--version"])
            }
            Tool::PreviousRelease => previous_release().map(|_| ()),
        }
    }
}

/// The previous release's binary (`scripts/build-previous-release.sh --check`).
pub fn previous_release() -> Result<PathBuf, String> {
    let path = checked_build("scripts/build-previous-release.sh")?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} is missing", path.display()))
    }
}

/// The path a build script of the repository prints as its last line when
/// run with `--check` (a current build), or the script's complaint.
pub fn checked_build(script: &str) -> Result<PathBuf, String> {
    let out = Command::new("bash")
        .arg(crate::realkube::repo_root().join(script))
        .arg("--check")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("bash would not start: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim(),
    ))
}

/// The tool, checked once per test process; panics (failing the test) when it
/// is missing or broken.
pub fn require(tool: Tool) {
    if let Err(why) = check(tool) {
        panic!("{}", missing_message(tool, &why));
    }
}

/// Whether the tool runs, checked once per process (`Err`: why not).
pub fn check(tool: Tool) -> Result<(), String> {
    static SEEN: OnceLock<std::sync::Mutex<std::collections::HashMap<Tool, Result<(), String>>>> =
        OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    seen.entry(tool).or_insert_with(|| tool.probe()).clone()
}

/// The failure message for a tool that is missing or broken.
pub fn missing_message(tool: Tool, why: &str) -> String {
    format!(
        "this test needs {} and it does not run ({why}); install it with {}",
        tool.name(),
        tool.install()
    )
}

/// `SDK_ROOT/platform/pubsub-emulator/bin/cloud-pubsub-emulator`, with the
/// SDK root as gcloud reports it.
pub fn pubsub_launcher() -> Result<PathBuf, String> {
    let out = Command::new("gcloud")
        .args(["info", "--format=value(installation.sdk_root)"])
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("gcloud would not run: {e}"))?;
    if !out.status.success() {
        return Err(format!("gcloud info exited with {}", out.status));
    }
    let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(PathBuf::from(root).join("platform/pubsub-emulator/bin/cloud-pubsub-emulator"))
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{program}` would not start: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_tool_the_reason_and_the_install() {
        let m = missing_message(Tool::Moto, "`moto_server` would not start: not found");
        assert!(m.contains("moto_server"), "{m}");
        assert!(m.contains("not found"), "{m}");
        assert!(m.contains("scripts/install-test-tools.sh"), "{m}");
    }

    #[test]
    fn a_program_that_does_not_exist_is_an_error_not_a_pass() {
        let err = run("meshmirror-no-such-program", &["--version"]).unwrap_err();
        assert!(err.contains("would not start"), "{err}");
        assert!(run("false", &[]).is_err());
        assert!(run("true", &[]).is_ok());
    }
}
