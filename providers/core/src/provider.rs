use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::{GroupEvent, GroupRef, HookDef, Instance, LifecycleAction, Outcome, ProviderError};

pub type BoxEventStream = BoxStream<'static, GroupEvent>;

/// A cloud backend. Optional abilities are default methods.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// "aws" | "azure" | "gcp" | "sim".
    fn name(&self) -> &'static str;

    /// The group's current members, every state included.
    async fn members(&self, group: &GroupRef) -> Result<Vec<Instance>, ProviderError>;

    /// What the cloud says now of the named instances, as members of
    /// `group`: each one that is in the group (in any state), and none of
    /// the others (an id the cloud no longer places in the group is absent).
    /// Cloud events name instances, so a pass they trigger asks about those
    /// only, at a cost that does not grow with the group. `None`: this
    /// provider cannot, and the pass reads every member.
    async fn instances(
        &self,
        _group: &GroupRef,
        _ids: &[String],
    ) -> Result<Option<Vec<Instance>>, ProviderError> {
        Ok(None)
    }

    /// The push feed of group events. The controller calls this once per
    /// leadership term and drops the stream when the term ends, so each call
    /// must start a fresh subscription (and dropping it must stop consuming).
    fn events(&self) -> Option<BoxEventStream> {
        None
    }

    /// The lifecycle hooks `group` has in the cloud. `None`: this provider
    /// has no lifecycle hooks. The core answers a hook only when it is both
    /// named in the mirror's spec and listed here for the mirror's own group.
    async fn lifecycle_hooks(
        &self,
        _group: &GroupRef,
    ) -> Result<Option<Vec<HookDef>>, ProviderError> {
        Ok(None)
    }

    /// Exactly the lifecycle hooks meshmirror answers for `group` now (named
    /// in the claimant's spec and found on the group), told before every
    /// `members` call; an empty list when none. A provider may keep holds by
    /// these hooks alive (AWS heartbeats), including holds that began before
    /// this process started, and must stop at once for a hook no longer told.
    fn answers_hooks(&self, _group: &GroupRef, _hooks: &[&str]) {}

    /// The leadership term ended: stop all background work for the term
    /// (heartbeats, held state) before another replica takes over.
    fn stand_down(&self) {}

    /// Answers a lifecycle hook that holds an instance.
    async fn complete_lifecycle(
        &self,
        _action: &LifecycleAction,
        _outcome: Outcome,
    ) -> Result<(), ProviderError> {
        Ok(())
    }
}
