//! The sim as a [`Provider`]: what the controller sees.

use std::time::Instant;

use async_trait::async_trait;
use meshmirror_provider::{
    BoxEventStream, GroupEventKind, GroupRef, HookDef, Instance, InstanceState, LifecycleAction,
    LifecycleKind, Outcome, Provider, ProviderError,
};

use crate::SimCloud;

fn sim_group(group: &GroupRef) -> Result<&str, ProviderError> {
    match group {
        GroupRef::Sim { group } => Ok(group),
        other => Err(ProviderError::Permanent(format!(
            "the sim provider serves only sim groups, not {other}"
        ))),
    }
}

#[async_trait]
impl Provider for SimCloud {
    fn name(&self) -> &'static str {
        "sim"
    }

    async fn members(&self, group: &GroupRef) -> Result<Vec<Instance>, ProviderError> {
        let delay = {
            let mut st = self.lock();
            st.members_calls += 1;
            let name = sim_group(group)?;
            let Some(g) = st.groups.get_mut(name) else {
                return Err(ProviderError::GroupNotFound(group.to_string()));
            };
            g.members_calls += 1;
            g.members_delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let name = sim_group(group)?;
        let mut st = self.lock();
        let Some(g) = st.groups.get_mut(name) else {
            return Err(ProviderError::GroupNotFound(group.to_string()));
        };
        g.members_answered += 1;
        if let Some(err) = g.fail_next.pop_front() {
            return Err(err);
        }
        if let Some(err) = &g.fail_always {
            return Err(err.clone());
        }
        Ok(g.instances())
    }

    fn events(&self) -> Option<BoxEventStream> {
        Some(self.subscribe())
    }

    async fn lifecycle_hooks(
        &self,
        group: &GroupRef,
    ) -> Result<Option<Vec<HookDef>>, ProviderError> {
        let name = sim_group(group)?;
        let st = self.lock();
        let Some(g) = st.groups.get(name) else {
            return Err(ProviderError::GroupNotFound(group.to_string()));
        };
        Ok(Some(g.hooks()))
    }

    /// Releases an instance held by a hook: a terminating one vanishes (whatever
    /// the outcome, as in the clouds); a launching one runs on Continue and is
    /// terminated on Abandon. An action that is not active is refused, as AWS does.
    async fn complete_lifecycle(
        &self,
        action: &LifecycleAction,
        outcome: Outcome,
    ) -> Result<(), ProviderError> {
        let name = sim_group(&action.group)?;
        let mut st = self.lock();
        let Some(g) = st.groups.get_mut(name) else {
            return Err(ProviderError::GroupNotFound(action.group.to_string()));
        };
        if let Some(err) = g.fail_next_completions.pop_front() {
            return Err(err);
        }
        let active = |held: &LifecycleAction| {
            held.kind == action.kind
                && held.hook == action.hook
                && (action.token.is_none() || held.token == action.token)
        };
        let Some(pos) = g.members.iter().position(|m| {
            m.inst.id == action.instance_id && m.lifecycle.as_ref().is_some_and(active)
        }) else {
            return Err(ProviderError::Permanent(format!(
                "no active lifecycle action {} ({:?}) for instance {} in {}",
                action.hook, action.kind, action.instance_id, action.group
            )));
        };
        let instance_id = action.instance_id.clone();
        let member = &mut g.members[pos];
        let held = member.lifecycle.take().unwrap_or_else(|| action.clone());
        let kind = match (held.kind, outcome) {
            (LifecycleKind::Launch, Outcome::Continue) => {
                member.inst.state = InstanceState::Running;
                GroupEventKind::Changed
            }
            (LifecycleKind::Launch, Outcome::Abandon) | (LifecycleKind::Terminate, _) => {
                g.members.remove(pos);
                GroupEventKind::Terminated { instance_id }
            }
        };
        tracing::debug!(group = name, instance = %held.instance_id, ?outcome, "sim lifecycle action completed");
        st.completed.push((held, outcome, Instant::now()));
        st.hub.emit(name, kind);
        Ok(())
    }
}
