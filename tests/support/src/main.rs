//! `meshmirror-testkit`: runs the fakes by hand.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meshmirror_testkit::ApiServer;
use meshmirror_testkit::arm::{ArmMock, ByHand};
use meshmirror_testkit::gce::GceMock;

#[derive(Parser)]
#[command(version, about = "Fakes for meshmirror's tests, run by hand")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the fake Kubernetes API server until killed (Istio CRDs always loaded).
    Apiserver {
        /// Address to listen on (plain HTTP).
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// A CustomResourceDefinition YAML file (multi-document files too); repeatable.
        #[arg(long = "crd")]
        crds: Vec<PathBuf>,
        /// Write a kubeconfig for kubectl here.
        #[arg(long)]
        kubeconfig_out: Option<PathBuf>,
        /// Watch history kept, in events.
        #[arg(long, default_value_t = 100_000)]
        history: usize,
    },
    /// Serve the mock Compute Engine API (managed instance groups) until
    /// killed; drive it through its control routes under /_mock/.
    Gce {
        /// Address to listen on (plain HTTP); port 0: a free one, printed.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Serve the mock Azure Resource Manager API and Entra ID token endpoint
    /// (HTTPS, a CA made at start) until killed; drive it through its
    /// control routes under /_mock/.
    Arm {
        /// Address to listen on; port 0: a free one, printed.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Write the CA certificate clients must trust here [default: a
        /// file in the temporary directory, removed at exit].
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// The tenant of the service principal the token endpoint knows.
        #[arg(long, default_value = "11111111-1111-4111-8111-111111111111")]
        tenant_id: String,
        /// Its client id.
        #[arg(long, default_value = "22222222-2222-4222-8222-222222222222")]
        client_id: String,
        /// Its secret.
        #[arg(long, default_value = "mock-client-secret")]
        client_secret: String,
    },
}

/// Writes the banner to stdout at once (scripts read it from a pipe).
fn say(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// Ctrl-C, or SIGTERM (`kill PID`).
async fn stopped() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Apiserver {
            listen,
            crds,
            kubeconfig_out,
            history,
        } => {
            let mut builder = ApiServer::builder().listen(listen).history(history);
            for crd in &crds {
                builder = builder.crd_file(crd);
            }
            let server = builder.start().await.context("starting the API server")?;
            if let Some(path) = &kubeconfig_out {
                server
                    .write_kubeconfig(path)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            tracing::info!(url = %server.url(), "serving; stop with Ctrl-C");
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            server.shutdown().await;
        }
        Command::Gce { listen } => {
            let mock = GceMock::start_at(listen)
                .await
                .with_context(|| format!("starting the GCE mock on {listen}"))?;
            say(&mock.by_hand_banner())?;
            stopped().await?;
        }
        Command::Arm {
            listen,
            ca_file,
            tenant_id,
            client_id,
            client_secret,
        } => {
            let temp_dir = ca_file.is_none().then(|| {
                std::env::temp_dir().join(format!("meshmirror-testkit-arm-{}", std::process::id()))
            });
            let by_hand = ByHand {
                listen,
                ca_file: ca_file
                    .or_else(|| temp_dir.as_ref().map(|d| d.join("ca.pem")))
                    .unwrap_or_default(),
                tenant_id,
                client_id,
                client_secret,
            };
            let started = ArmMock::start_by_hand(&by_hand)
                .await
                .with_context(|| format!("starting the ARM mock on {listen}"));
            let result = match started {
                Ok(mock) => {
                    say(&mock.by_hand_banner(&by_hand))?;
                    stopped().await
                }
                Err(e) => Err(e),
            };
            if let Some(dir) = &temp_dir {
                let _ = std::fs::remove_dir_all(dir);
            }
            result?;
        }
    }
    Ok(())
}
