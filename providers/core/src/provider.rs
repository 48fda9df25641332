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

    /// The lifecycle hooks meshmirror answers for `group` (from the mirror's
    /// spec), told before every `members` call. A provider may keep holds by
    /// these hooks alive (AWS heartbeats), including holds that began before
    /// this process started.
    fn answers_hooks(&self, _group: &GroupRef, _hooks: &[&str]) {}

    /// Answers a lifecycle hook that holds an instance.
    async fn complete_lifecycle(
        &self,
        _action: &LifecycleAction,
        _outcome: Outcome,
    ) -> Result<(), ProviderError> {
        Ok(())
    }
}
