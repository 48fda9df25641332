use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::{GroupEvent, GroupRef, Instance, LifecycleAction, Outcome, ProviderError};

pub type BoxEventStream = BoxStream<'static, GroupEvent>;

/// A cloud backend. Optional abilities are default methods.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// "aws" | "azure" | "gcp" | "sim".
    fn name(&self) -> &'static str;

    /// The group's current members, every state included.
    async fn members(&self, group: &GroupRef) -> Result<Vec<Instance>, ProviderError>;

    /// The push feed of group events. The controller calls this once per
    /// leadership term and drops the stream when the term ends, so each call
    /// must start a fresh subscription (and dropping it must stop consuming).
    fn events(&self) -> Option<BoxEventStream> {
        None
    }

    /// Answers a lifecycle hook that holds an instance.
    async fn complete_lifecycle(
        &self,
        _action: &LifecycleAction,
        _outcome: Outcome,
    ) -> Result<(), ProviderError> {
        Ok(())
    }
}
