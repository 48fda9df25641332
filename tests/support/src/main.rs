//! `meshmirror-testkit`: runs the fakes by hand.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meshmirror_testkit::ApiServer;

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
    }
    Ok(())
}
