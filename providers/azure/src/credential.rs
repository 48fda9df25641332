//! Which Azure identity meshmirror uses: the `azure_identity` 1.x credentials,
//! chosen the way `DefaultAzureCredential` did before 1.0 removed it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::{ClientOptions, Transport, Url};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use secrecy::{ExposeSecret, SecretString};

/// Which credential to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CredentialKind {
    /// Workload identity when a federated token file is configured, else a
    /// client secret when one is, else managed identity, then the Azure CLI.
    #[default]
    Auto,
    WorkloadIdentity,
    ManagedIdentity,
    ClientSecret,
    AzureCli,
}

impl std::str::FromStr for CredentialKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => CredentialKind::Auto,
            "workload-identity" => CredentialKind::WorkloadIdentity,
            "managed-identity" => CredentialKind::ManagedIdentity,
            "client-secret" => CredentialKind::ClientSecret,
            "azure-cli" => CredentialKind::AzureCli,
            other => {
                return Err(format!(
                    "unknown credential {other:?}: auto, workload-identity, managed-identity, client-secret, azure-cli"
                ));
            }
        })
    }
}

/// What the credentials are built from (the service fills it from flags and
/// the standard `AZURE_*` variables).
#[derive(Clone, Debug, Default)]
pub struct CredentialConfig {
    pub kind: CredentialKind,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    /// Never shown by Debug or logs.
    pub client_secret: Option<SecretString>,
    pub federated_token_file: Option<PathBuf>,
    /// An https authority host instead of `https://login.microsoftonline.com`.
    pub authority_host: Option<Url>,
}

#[derive(Debug, thiserror::Error)]
#[error("azure credential: {0}")]
pub struct CredentialError(pub String);

fn need<'a>(value: &'a Option<String>, what: &str) -> Result<&'a str, CredentialError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| CredentialError(format!("{what} is required")))
}

fn client_options(config: &CredentialConfig, transport: Option<Transport>) -> ClientOptions {
    let cloud = config.authority_host.as_ref().map(|host| {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host.as_str().trim_end_matches('/').to_string();
        Arc::new(CloudConfiguration::from(custom))
    });
    ClientOptions {
        transport,
        cloud,
        ..ClientOptions::default()
    }
}

fn err(e: azure_core::Error) -> CredentialError {
    CredentialError(e.to_string())
}

/// Builds the configured credential. `transport` carries extra trusted CAs.
pub fn build(
    config: &CredentialConfig,
    transport: Option<Transport>,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    let kind = match config.kind {
        CredentialKind::Auto if config.federated_token_file.is_some() => {
            CredentialKind::WorkloadIdentity
        }
        CredentialKind::Auto if config.client_secret.is_some() => CredentialKind::ClientSecret,
        other => other,
    };
    let options = client_options(config, transport);
    Ok(match kind {
        CredentialKind::WorkloadIdentity => {
            let file = config
                .federated_token_file
                .clone()
                .ok_or_else(|| CredentialError("a federated token file is required".into()))?;
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: options,
                },
                client_id: Some(need(&config.client_id, "a client id")?.to_string()),
                tenant_id: Some(need(&config.tenant_id, "a tenant id")?.to_string()),
                token_file_path: Some(file),
            }))
            .map_err(err)?
        }
        CredentialKind::ClientSecret => ClientSecretCredential::new(
            need(&config.tenant_id, "a tenant id")?,
            need(&config.client_id, "a client id")?.to_string(),
            Secret::new(
                config
                    .client_secret
                    .as_ref()
                    .map(|s| s.expose_secret())
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| CredentialError("a client secret is required".into()))?
                    .to_string(),
            ),
            Some(ClientSecretCredentialOptions {
                client_options: options,
            }),
        )
        .map_err(err)?,
        CredentialKind::ManagedIdentity => managed_identity(config, options)?,
        CredentialKind::AzureCli => azure_cli(config)?,
        CredentialKind::Auto => {
            // Built lazily in order: on a laptop there is no managed identity
            // endpoint, in a pod there is no `az`.
            Arc::new(Chain::new(vec![
                managed_identity(config, options)?,
                azure_cli(config)?,
            ]))
        }
    })
}

fn managed_identity(
    config: &CredentialConfig,
    options: ClientOptions,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    Ok(
        ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: config.client_id.clone().map(UserAssignedId::ClientId),
            client_options: options,
        }))
        .map_err(err)?,
    )
}

fn azure_cli(config: &CredentialConfig) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    Ok(AzureCliCredential::new(Some(AzureCliCredentialOptions {
        tenant_id: config.tenant_id.clone(),
        ..Default::default()
    }))
    .map_err(err)?)
}

/// Tries each credential in order; sticks to the first that gave a token.
#[derive(Debug)]
pub struct Chain {
    credentials: Vec<Arc<dyn TokenCredential>>,
    chosen: Mutex<Option<usize>>,
}

impl Chain {
    pub fn new(credentials: Vec<Arc<dyn TokenCredential>>) -> Self {
        Chain {
            credentials,
            chosen: Mutex::new(None),
        }
    }
}

#[async_trait]
impl TokenCredential for Chain {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let chosen = *self.chosen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = chosen {
            return self.credentials[i].get_token(scopes, options).await;
        }
        let mut errors = Vec::new();
        for (i, credential) in self.credentials.iter().enumerate() {
            match credential.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    *self.chosen.lock().unwrap_or_else(PoisonError::into_inner) = Some(i);
                    return Ok(token);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!("no Azure credential worked: {}", errors.join("; ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_flags() {
        assert_eq!(
            "workload-identity".parse::<CredentialKind>(),
            Ok(CredentialKind::WorkloadIdentity)
        );
        assert!("default".parse::<CredentialKind>().is_err());
    }

    #[test]
    fn explicit_kinds_need_their_inputs() {
        let config = CredentialConfig {
            kind: CredentialKind::ClientSecret,
            tenant_id: Some("t".into()),
            ..Default::default()
        };
        let e = build(&config, None).err().unwrap();
        assert!(e.0.contains("client id"), "{e}");
    }

    #[test]
    fn an_http_authority_host_is_refused() {
        let config = CredentialConfig {
            kind: CredentialKind::ClientSecret,
            tenant_id: Some("t".into()),
            client_id: Some("c".into()),
            client_secret: Some("s".into()),
            authority_host: Some(Url::parse("http://127.0.0.1:1").unwrap()),
            ..Default::default()
        };
        assert!(build(&config, None).is_err());
    }

    #[test]
    fn the_client_secret_never_shows_in_debug_output() {
        let config = CredentialConfig {
            client_secret: Some("hunter2-very-secret".into()),
            ..CredentialConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("client_secret"), "{shown}");
    }
}
