//! SDK clients: the shared configuration is loaded once (the default
//! credential chain, or static keys for tests), and the clients of each region
//! are built when a mirror first names it.

use std::collections::HashMap;
use std::sync::Mutex;

use secrecy::ExposeSecret;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_autoscaling::config::{Credentials, Region};
use tokio::sync::OnceCell;

use crate::config::AwsConfig;

#[derive(Clone, Debug)]
pub struct RegionClients {
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub ec2: aws_sdk_ec2::Client,
}

pub struct Clients {
    config: AwsConfig,
    shared: OnceCell<SdkConfig>,
    regions: Mutex<HashMap<String, RegionClients>>,
}

impl Clients {
    pub fn new(config: AwsConfig) -> Self {
        Clients {
            config,
            shared: OnceCell::new(),
            regions: Mutex::default(),
        }
    }

    /// The shared SDK configuration; the default chain is consulted lazily,
    /// at the first request that needs credentials.
    pub async fn shared(&self) -> &SdkConfig {
        self.shared
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(url) = &self.config.endpoint_url {
                    loader = loader.endpoint_url(url);
                }
                if let Some(region) = &self.config.region {
                    loader = loader.region(Region::new(region.clone()));
                }
                if let Some((key, secret)) = &self.config.static_credentials {
                    loader = loader.credentials_provider(Credentials::new(
                        key.clone(),
                        secret.expose_secret().to_string(),
                        None,
                        None,
                        "meshmirror-static",
                    ));
                }
                loader.load().await
            })
            .await
    }

    pub async fn region(&self, region: &str) -> RegionClients {
        if let Some(clients) = self.regions.lock().expect("clients lock").get(region) {
            return clients.clone();
        }
        let shared = self.shared().await;
        let clients = RegionClients {
            autoscaling: aws_sdk_autoscaling::Client::from_conf(
                aws_sdk_autoscaling::config::Builder::from(shared)
                    .region(Region::new(region.to_string()))
                    .build(),
            ),
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(shared)
                    .region(Region::new(region.to_string()))
                    .build(),
            ),
        };
        self.regions
            .lock()
            .expect("clients lock")
            .entry(region.to_string())
            .or_insert(clients)
            .clone()
    }

    pub async fn sqs(&self, region: &str) -> aws_sdk_sqs::Client {
        let shared = self.shared().await;
        aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(shared)
                .region(aws_sdk_sqs::config::Region::new(region.to_string()))
                .build(),
        )
    }

    /// The region of the queue and of events that name none.
    pub async fn default_region(&self) -> String {
        if let Some(region) = self
            .config
            .event_queue_url
            .as_deref()
            .and_then(crate::config::queue_region)
        {
            return region;
        }
        if let Some(region) = &self.config.region {
            return region.clone();
        }
        self.shared()
            .await
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_string())
    }
}
