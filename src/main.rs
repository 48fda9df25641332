//! The `meshmirror` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use meshmirror::app::{self, RunOptions};
use meshmirror::clouds::CloudArgs;
use meshmirror::leader::LeaseConfig;
use meshmirror::workloadentry::EntryVersion;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "meshmirror",
    version,
    about = "Mirrors cloud autoscaling groups into Istio WorkloadEntries"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MESHMIRROR_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller (in the cluster, or against a kubeconfig).
    Run(RunArgs),
    /// One pass without a cluster: read the cloud, print the Services,
    /// ServiceEntries, Sidecar and WorkloadEntries as YAML.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Render {
        #[command(subcommand)]
        what: Option<RenderWhat>,
        /// The ScalingGroupMirror manifest.
        #[arg(short = 'f', long = "filename", required = true)]
        file: Option<PathBuf>,
        /// Serve the `sim` provider from this file.
        #[arg(long)]
        sim_file: Option<PathBuf>,
        /// WorkloadGroup manifests the mirror's workloads refer to.
        #[arg(long = "workload-group")]
        workload_groups: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = EntryVersion::V1)]
        workloadentry_version: EntryVersion,
        #[command(flatten)]
        clouds: CloudArgs,
    },
    /// Print the ScalingGroupMirror CRD.
    Crd,
    /// Run everything in-process on a simulated cloud and a fake API server.
    Demo {
        /// Keep running after the walk-through, for kubectl to look at.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RenderWhat {
    /// Istio's `meshNetworks` block: every network of the mirrors (their
    /// `networkByCidr` as `fromCidr`), the cluster's own network and the
    /// gateways found. Reads the cluster (KUBECONFIG) when it can.
    MeshNetworks {
        /// Mirror manifests to read instead of the cluster's mirrors.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// Do not contact a cluster: only the mirrors of --filename, and no gateways.
        #[arg(long, requires = "files")]
        offline: bool,
        /// istiod's namespace (its network label and the gateway Services).
        #[arg(long, default_value = "istio-system")]
        istio_namespace: String,
        /// The cluster's name in the mesh (its network's `fromRegistry`).
        #[arg(long, default_value = "Kubernetes")]
        cluster_name: String,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Watch and write only these namespaces (default: all): repeat the
    /// flag or separate with commas. Each is watched with a namespaced list
    /// and watch, for installs whose RBAC grants Roles per namespace.
    #[arg(
        long = "namespace",
        env = "MESHMIRROR_NAMESPACE",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// Log each plan; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// One pass of every mirror, then exit (non-zero if any failed).
    #[arg(long)]
    once: bool,
    /// Serve the `sim` provider from this YAML file, re-read when it changes.
    #[arg(long)]
    sim_file: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, env = "MESHMIRROR_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// The WorkloadEntry API version to write (v1beta1 for Istio before 1.22).
    #[arg(long, value_enum, default_value_t = EntryVersion::V1)]
    workloadentry_version: EntryVersion,
    /// Average writes per second to the API server (0: unlimited).
    #[arg(long, default_value_t = 50.0)]
    kube_qps: f64,
    /// Write bursts allowed above --kube-qps.
    #[arg(long, default_value_t = 100)]
    kube_burst: u32,
    /// Mirror passes run at once. Each holds its mirror's entries in memory
    /// while it waits for the write rate; raise it for many mirrors on slow
    /// clouds.
    #[arg(long, default_value_t = meshmirror::controller::DEFAULT_CONCURRENT_PASSES,
          value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_passes: u16,
    /// NAMESPACE=PATTERN: groups a namespace may mirror (`*` wildcards,
    /// `{namespace}` for the mirror's namespace; group ids as in
    /// status.group). Everything no rule allows is denied, and with no rule
    /// every group is (deny by default).
    #[arg(long = "allowed-groups", value_delimiter = ';')]
    allowed_groups: Vec<String>,
    /// Allow every namespace to mirror every group: single-tenant clusters
    /// only (logged at start). Conflicts with --allowed-groups.
    #[arg(long, conflicts_with = "allowed_groups")]
    allow_all_groups: bool,
    /// How long the entries of a group the cloud says does not exist are
    /// kept before they are withdrawn (clouds reuse addresses), e.g. 10m.
    /// Other cloud errors never withdraw anything.
    #[arg(long, default_value = "10m", value_parser = parse_grace)]
    group_gone_grace: std::time::Duration,
    /// istiod's namespace: the cluster's own network is its
    /// `topology.istio.io/network` label, and network gateways are the
    /// Services in it labelled with a network.
    #[arg(
        long,
        env = "MESHMIRROR_ISTIO_NAMESPACE",
        default_value = "istio-system"
    )]
    istio_namespace: String,
    #[command(flatten)]
    clouds: CloudArgs,
    /// Run as one of several replicas: only the holder of the Lease reconciles,
    /// consumes cloud events and answers lifecycle hooks.
    #[arg(long, env = "MESHMIRROR_LEADER_ELECT")]
    leader_elect: bool,
    /// The Lease's name.
    #[arg(long, default_value = "meshmirror")]
    lease_name: String,
    /// The Lease's namespace (default: the pod's namespace, from POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "meshmirror-system")]
    lease_namespace: String,
    /// How long a lease lasts without renewal before a standby takes over.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops reconciling.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    renew_deadline: Duration,
    /// How often to try to acquire or renew.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    retry_period: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    meshmirror::core::config::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration; write it like 15s or 1m"))
}

fn identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("meshmirror-{}", std::process::id()))
}

fn init_tracing(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}

async fn main_inner(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Crd => {
            use std::io::Write;
            std::io::stdout().write_all(app::crd_yaml().as_bytes())?;
            Ok(true)
        }
        Command::Render {
            what:
                Some(RenderWhat::MeshNetworks {
                    files,
                    offline,
                    istio_namespace,
                    cluster_name,
                }),
            ..
        } => {
            use std::io::Write;
            let client = if offline {
                None
            } else {
                Some(kube::Client::try_default().await.context(
                    "no Kubernetes configuration (KUBECONFIG); use --offline with --filename",
                )?)
            };
            let yaml = app::mesh_networks(client, &files, &istio_namespace, &cluster_name).await?;
            std::io::stdout().write_all(yaml.as_bytes())?;
            Ok(true)
        }
        Command::Render {
            what: None,
            file,
            sim_file,
            workload_groups,
            workloadentry_version,
            clouds,
        } => {
            use std::io::Write;
            let file = file.context("--filename is required")?;
            let yaml = app::render(
                &file,
                sim_file.as_deref(),
                &workload_groups,
                workloadentry_version,
                &clouds,
            )
            .await?;
            std::io::stdout().write_all(yaml.as_bytes())?;
            Ok(true)
        }
        Command::Demo { follow } => {
            #[cfg(feature = "demo")]
            {
                meshmirror::demo::run(follow).await?;
                Ok(true)
            }
            #[cfg(not(feature = "demo"))]
            {
                let _ = follow;
                anyhow::bail!("this build has no demo: build with the `demo` feature")
            }
        }
        Command::Run(args) => {
            let client = kube::Client::try_default()
                .await
                .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
            let opts = RunOptions {
                namespaces: args.namespaces,
                dry_run: args.dry_run,
                once: args.once,
                sim_file: args.sim_file,
                metrics_addr: args.metrics_addr,
                version: args.workloadentry_version,
                kube_qps: args.kube_qps,
                kube_burst: args.kube_burst,
                max_concurrent_passes: Some(args.max_concurrent_passes),
                allowed_groups: args.allowed_groups,
                allow_all_groups: args.allow_all_groups,
                group_gone_grace: Some(args.group_gone_grace),
                sim_cloud: None,
                clouds: args.clouds,
                leader: args.leader_elect.then(|| LeaseConfig {
                    namespace: args.lease_namespace,
                    name: args.lease_name,
                    identity: identity(),
                    lease_duration: args.lease_duration,
                    renew_deadline: args.renew_deadline,
                    retry_period: args.retry_period,
                }),
                istio_namespace: Some(args.istio_namespace),
            };
            Ok(app::run(client, opts, shutdown_signal()).await?)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints tables for a person; its logs would drown them.
    let default_filter = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info,kube=warn,hyper=warn",
    };
    let log_format = cli.log_format;
    init_tracing(log_format, default_filter);
    match main_inner(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            // One line a person can act on, never a panic; with JSON logs a
            // JSON object like every other line, so a log pipeline keeps it.
            match log_format {
                LogFormat::Json => tracing::error!("error: {err:#}"),
                LogFormat::Text => eprintln!("error: {err:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn parse_grace(s: &str) -> Result<std::time::Duration, String> {
    meshmirror::core::config::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration; write it like 90s, 10m or 1h"))
}
