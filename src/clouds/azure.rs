//! The azure provider's flags and registration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshmirror_azure::{AzureConfig, AzureProvider, CredentialConfig, CredentialKind};
use meshmirror_provider::RetryPolicy;

use super::MetricsObserver;
use crate::metrics::Metrics;
use crate::providers::Providers;

/// Flags of the azure provider. Credentials: workload identity (AKS), a
/// client secret, managed identity or the Azure CLI, from the standard
/// `AZURE_*` variables unless given here.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AzureArgs {
    /// ARM endpoint (default https://management.azure.com; sovereign clouds, tests).
    #[arg(long, env = "MESHMIRROR_AZURE_ENDPOINT")]
    pub azure_endpoint: Option<String>,
    /// Entra ID authority host (default https://login.microsoftonline.com); https only.
    #[arg(long, env = "AZURE_AUTHORITY_HOST")]
    pub azure_authority_host: Option<String>,
    /// auto | workload-identity | managed-identity | client-secret | azure-cli.
    #[arg(long, env = "MESHMIRROR_AZURE_CREDENTIAL")]
    pub azure_credential: Option<String>,
    #[arg(long, env = "AZURE_TENANT_ID")]
    pub azure_tenant_id: Option<String>,
    /// Application (client) id; with managed identity, the user-assigned identity's.
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub azure_client_id: Option<String>,
    /// Prefer the environment variable: a flag shows in the process list.
    #[arg(long, env = "AZURE_CLIENT_SECRET", hide_env_values = true, value_parser = secret)]
    pub azure_client_secret: Option<secrecy::SecretString>,
    /// The projected service account token (set by the AKS workload identity webhook).
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE")]
    pub azure_federated_token_file: Option<PathBuf>,
    /// PEM certificates trusted beside the system roots (TLS-inspecting proxies, tests).
    #[arg(long, env = "MESHMIRROR_AZURE_CA_FILE")]
    pub azure_ca_file: Option<PathBuf>,
    /// Storage queue fed by an Event Grid subscription:
    /// https://ACCOUNT.queue.core.windows.net/QUEUE.
    #[arg(long, env = "MESHMIRROR_AZURE_EVENT_QUEUE")]
    pub azure_event_queue: Option<String>,
    /// Seconds between polls of an empty event queue (0.1 or more; a
    /// fraction is allowed). Storage queues have no long poll: an event
    /// waits up to this long before its pass starts.
    #[arg(long, env = "MESHMIRROR_AZURE_EVENT_POLL_SECONDS", default_value_t = 0.5,
        value_parser = poll_seconds)]
    pub azure_event_poll_seconds: f64,
    /// ARM reads a second meshmirror spends at most (1 to 10000). ARM
    /// refills 25 a second per subscription, region and principal; the
    /// default keeps a fifth of that for everyone else using the principal.
    /// Full reads of many large sets then take longer than the interval
    /// instead of being throttled; reads for events keep a reserve.
    #[arg(long, env = "MESHMIRROR_AZURE_ARM_READS_PER_SECOND", default_value_t = meshmirror_azure::ReadBudget::DEFAULT_PER_SECOND,
        value_parser = reads_per_second)]
    pub azure_arm_reads_per_second: f64,
}

fn reads_per_second(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(r) if (1.0..=10_000.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "{value:?} is not a number of reads a second from 1 to 10000 (ARM refills 25 a second; default 20)"
        )),
    }
}

/// A poll interval of at least 100 ms, so a typo cannot make a busy loop.
fn poll_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if (0.1..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!(
            "{value:?} is not a number of seconds from 0.1 to 3600 (e.g. 0.5)"
        )),
    }
}

/// Flag values that must never show in Debug output or logs.
fn secret(value: &str) -> Result<secrecy::SecretString, String> {
    Ok(value.into())
}

fn url(flag: &str, value: &str) -> Result<meshmirror_azure::Url, String> {
    meshmirror_azure::Url::parse(value).map_err(|e| format!("--{flag} {value}: {e}"))
}

impl AzureArgs {
    pub fn config(&self) -> Result<AzureConfig, String> {
        let mut config = AzureConfig::default();
        if let Some(endpoint) = &self.azure_endpoint {
            config.endpoint = url("azure-endpoint", endpoint)?;
        }
        config.credential = CredentialConfig {
            kind: match &self.azure_credential {
                Some(kind) => kind.parse()?,
                None => CredentialKind::Auto,
            },
            tenant_id: self.azure_tenant_id.clone(),
            client_id: self.azure_client_id.clone(),
            client_secret: self.azure_client_secret.clone(),
            federated_token_file: self.azure_federated_token_file.clone(),
            authority_host: match &self.azure_authority_host {
                Some(host) => Some(url("azure-authority-host", host)?),
                None => None,
            },
        };
        if let Some(path) = &self.azure_ca_file {
            config.extra_ca_pem = Some(
                std::fs::read(path)
                    .map_err(|e| format!("--azure-ca-file {}: {e}", path.display()))?,
            );
        }
        if let Some(queue) = &self.azure_event_queue {
            config.event_queue = Some(url("azure-event-queue", queue)?);
        }
        // Built without the parser (`AzureArgs::default()`: 0), still no busy loop.
        config.event_poll_interval =
            Duration::from_secs_f64(self.azure_event_poll_seconds.clamp(0.1, 3600.0));
        // Likewise (0 there): at least one read a second.
        config.arm_reads_per_second = self.azure_arm_reads_per_second.clamp(1.0, 10_000.0);
        Ok(config)
    }
}

/// Registers the azure provider. Nothing calls Azure until a mirror names a
/// scale set (or the event queue is configured).
pub async fn register(
    providers: &mut Providers,
    args: &AzureArgs,
    metrics: &Arc<Metrics>,
) -> Result<(), String> {
    let provider = AzureProvider::new(args.config()?)
        .map_err(|e| e.to_string())?
        .with_observer(MetricsObserver::shared("azure", metrics));
    providers.add(provider, metrics.clone(), RetryPolicy::default());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        azure: AzureArgs,
    }

    #[test]
    fn a_client_secret_flag_never_shows_in_debug_output() {
        let cli = Cli::try_parse_from(["meshmirror", "--azure-client-secret", "hunter2-flag"])
            .expect("parses");
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let config = cli.azure.config().expect("a config");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn the_arm_read_budget_defaults_to_20_a_second_and_refuses_nonsense() {
        let budget = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("meshmirror").chain(args.iter().copied()))
                .map(|c| c.azure.config().expect("a config").arm_reads_per_second)
                .map_err(|e| e.to_string())
        };
        assert_eq!(budget(&[]), Ok(20.0));
        assert_eq!(budget(&["--azure-arm-reads-per-second=12.5"]), Ok(12.5));
        for bad in ["0", "0.5", "-3", "NaN", "fast", "20000"] {
            let flag = format!("--azure-arm-reads-per-second={bad}");
            let err = budget(&[&flag]).expect_err(bad);
            assert!(
                err.contains("--azure-arm-reads-per-second") && err.contains("1 to 10000"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_event_poll_interval_takes_fractions_and_refuses_a_busy_loop() {
        let poll = |v: &str| {
            Cli::try_parse_from([
                "meshmirror".to_string(),
                format!("--azure-event-poll-seconds={v}"),
            ])
            .map(|c| c.azure.config().expect("a config").event_poll_interval)
            .map_err(|e| e.to_string())
        };
        assert_eq!(poll("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(poll("5"), Ok(Duration::from_secs(5)));
        for bad in ["0", "0.05", "-1", "NaN", "inf", "soon"] {
            let err = poll(bad).expect_err(bad);
            assert!(
                err.contains("--azure-event-poll-seconds") && err.contains("0.1 to 3600"),
                "{bad}: {err}"
            );
        }
        let default = Cli::try_parse_from(["meshmirror"]).expect("parses");
        assert_eq!(
            default
                .azure
                .config()
                .expect("a config")
                .event_poll_interval,
            Duration::from_millis(500)
        );
    }
}
