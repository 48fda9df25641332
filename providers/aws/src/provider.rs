//! `AwsProvider`: members of Auto Scaling groups, lifecycle-hook answers and
//! heartbeats, and the SQS event feed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_autoscaling::error::ProvideErrorMetadata;
use meshmirror_provider::{
    BoxEventStream, GroupRef, Instance, LifecycleAction, LifecycleKind, Outcome, Provider,
    ProviderError,
};

use crate::clients::Clients;
use crate::config::AwsConfig;
use crate::describe::{self, HookInfo};
use crate::error;
use crate::heartbeat::Holds;
use crate::memory::Memory;
use crate::rounds::Rounds;
use crate::state::{self, Membership};
use crate::stats::{Observer, Stats, StatsSnapshot};

/// How long a group's lifecycle hooks are cached (they rarely change, and
/// are only read when an instance waits on one).
const HOOKS_TTL: Duration = Duration::from_secs(60);
/// How often the heartbeat task looks for holds due a heartbeat.
const HEARTBEAT_TICK: Duration = Duration::from_secs(1);

/// A group's hooks and when they were read.
type CachedHooks = (Instant, Arc<Vec<HookInfo>>);

/// The AWS provider ("aws"). Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct AwsProvider {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: AwsConfig,
    pub clients: Clients,
    pub rounds: Rounds,
    pub memory: Mutex<Memory>,
    hooks: Mutex<HashMap<GroupRef, CachedHooks>>,
    holds: Mutex<Holds>,
    heartbeat_task: Mutex<bool>,
    pub stats: Stats,
    pub observer: Option<Arc<dyn Observer>>,
}

impl AwsProvider {
    pub fn new(config: AwsConfig) -> Self {
        Self::with_observer(config, None)
    }

    /// A provider that also reports its counts to `observer`.
    pub fn with_observer(config: AwsConfig, observer: Option<Arc<dyn Observer>>) -> Self {
        AwsProvider {
            inner: Arc::new(Inner {
                clients: Clients::new(config.clone()),
                rounds: Rounds::new(config.share_window),
                config,
                memory: Mutex::default(),
                hooks: Mutex::default(),
                holds: Mutex::default(),
                heartbeat_task: Mutex::new(false),
                stats: Stats::default(),
                observer,
            }),
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Sends one `RecordLifecycleActionHeartbeat` for the action.
    pub async fn heartbeat(&self, action: &LifecycleAction) -> Result<(), ProviderError> {
        self.inner.heartbeat(action).await
    }

    /// The heartbeat timeout of a group's hook, from `DescribeLifecycleHooks`.
    pub async fn heartbeat_timeout(
        &self,
        group: &GroupRef,
        hook: &str,
    ) -> Result<Option<Duration>, ProviderError> {
        let hooks = self.inner.hooks(group).await?;
        Ok(hooks
            .iter()
            .find(|h| h.name == hook)
            .and_then(|h| h.heartbeat))
    }
}

fn aws_group(group: &GroupRef) -> Result<(&str, &str), ProviderError> {
    match group {
        GroupRef::Aws { region, name } => Ok((region, name)),
        other => Err(ProviderError::Permanent(format!(
            "the aws provider cannot serve {other}"
        ))),
    }
}

impl Inner {
    pub(crate) fn throttled(&self, operation: &'static str, err: &ProviderError) {
        if matches!(err, ProviderError::Throttled { .. }) {
            self.stats.throttled();
            if let Some(o) = &self.observer {
                o.throttled(operation);
            }
        }
    }

    async fn hooks(&self, group: &GroupRef) -> Result<Arc<Vec<HookInfo>>, ProviderError> {
        if let Some((at, hooks)) = self.hooks.lock().expect("hooks lock").get(group)
            && at.elapsed() < HOOKS_TTL
        {
            return Ok(hooks.clone());
        }
        let (region, name) = aws_group(group)?;
        let clients = self.clients.region(region).await;
        let hooks = describe::hooks(&clients.autoscaling, name)
            .await
            .inspect_err(|e| self.throttled("DescribeLifecycleHooks", e))?;
        let hooks = Arc::new(hooks);
        self.hooks
            .lock()
            .expect("hooks lock")
            .insert(group.clone(), (Instant::now(), hooks.clone()));
        Ok(hooks)
    }

    async fn members(self: &Arc<Self>, group: &GroupRef) -> Result<Vec<Instance>, ProviderError> {
        let (region, name) = aws_group(group)?;
        let clients = self.clients.region(region).await;
        let autoscaling = clients.autoscaling.clone();
        let round = self
            .rounds
            .get(region, name, move |names| {
                describe::groups(autoscaling, names)
            })
            .await
            .inspect_err(|e| self.throttled("DescribeAutoScalingGroups", e))?;
        let Some(asg_members) = round.groups.get(name) else {
            return Err(ProviderError::GroupNotFound(group.to_string()));
        };
        let in_group: Vec<_> = asg_members
            .iter()
            .filter_map(|m| match state::membership(&m.lifecycle_state) {
                Membership::Member { state, waiting } => Some((m, state, waiting)),
                Membership::NotMember => None,
            })
            .collect();
        let ids: Vec<String> = in_group.iter().map(|(m, _, _)| m.id.clone()).collect();
        let facts = if ids.is_empty() {
            HashMap::new()
        } else {
            describe::instances(&clients.ec2, &ids)
                .await
                .inspect_err(|e| self.throttled("DescribeInstances", e))?
        };
        describe::complete(group, &ids, &facts)?;
        let hooks = if in_group.iter().any(|(_, _, waiting)| waiting.is_some()) {
            Some(self.hooks(group).await?)
        } else {
            None
        };
        let now = Instant::now();
        let memory_window = self.config.interruption_memory;
        let mut out = Vec::with_capacity(in_group.len());
        let mut held = Vec::new();
        {
            let mut memory = self.memory.lock().expect("memory lock");
            memory.members_seen(group, ids.iter().map(String::as_str), now, memory_window);
            for (member, base, waiting) in in_group {
                let warned = memory.is_spot_warned(&member.id, now, memory_window);
                let mut instance =
                    state::instance(region, member, facts.get(&member.id), base, warned);
                if let (Some(kind), Some(hooks)) = (waiting, &hooks) {
                    instance.lifecycle = self.action(&memory, group, &member.id, kind, hooks);
                    if let Some(action) = &instance.lifecycle
                        && kind == LifecycleKind::Terminate
                        && let Some(timeout) = hooks
                            .iter()
                            .find(|h| h.name == action.hook)
                            .and_then(|h| h.heartbeat)
                        && self.heartbeats_allowed(&memory, group, &action.hook)
                    {
                        held.push((action.clone(), timeout));
                    }
                }
                out.push(instance);
            }
        }
        if !held.is_empty() {
            {
                let mut holds = self.holds.lock().expect("holds lock");
                for (action, timeout) in &held {
                    holds.seen(action, *timeout, now);
                }
            }
            self.start_heartbeats();
        }
        Ok(out)
    }

    /// The action holding an instance: the hook (and token) announced by an
    /// event if one was; else the group's hook for that transition, preferring
    /// one meshmirror is known to answer when the group has several.
    fn action(
        &self,
        memory: &Memory,
        group: &GroupRef,
        instance_id: &str,
        kind: LifecycleKind,
        hooks: &[HookInfo],
    ) -> Option<LifecycleAction> {
        let launching = kind == LifecycleKind::Launch;
        let candidates: Vec<&HookInfo> =
            hooks.iter().filter(|h| h.launching == launching).collect();
        let (hook, token) = match memory.hook_for(group, instance_id, kind) {
            Some(note) if candidates.iter().any(|h| h.name == note.hook) => {
                (note.hook.clone(), note.token.clone())
            }
            _ => {
                let owned = memory.owned_hooks(group);
                let preferred = candidates.iter().find(|h| {
                    owned.is_some_and(|o| o.contains(&h.name))
                        || self.config.heartbeat_hooks.contains(&h.name)
                });
                let mut names: Vec<&str> = candidates.iter().map(|h| h.name.as_str()).collect();
                names.sort();
                let hook = preferred
                    .map(|h| h.name.as_str())
                    .or(names.first().copied())?;
                (hook.to_string(), None)
            }
        };
        Some(LifecycleAction {
            group: group.clone(),
            instance_id: instance_id.to_string(),
            kind,
            hook,
            token,
        })
    }

    /// Only hooks meshmirror answers get heartbeats: those named by
    /// `--aws-heartbeat-hooks` and those it has answered before.
    fn heartbeats_allowed(&self, memory: &Memory, group: &GroupRef, hook: &str) -> bool {
        self.config.heartbeat_hooks.iter().any(|h| h == hook)
            || memory.owned_hooks(group).is_some_and(|o| o.contains(hook))
    }

    fn start_heartbeats(self: &Arc<Self>) {
        let mut started = self.heartbeat_task.lock().expect("heartbeat lock");
        if *started {
            return;
        }
        *started = true;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_TICK);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let due = inner.holds.lock().expect("holds lock").due(Instant::now());
                for action in due {
                    if let Err(err) = inner.heartbeat(&action).await {
                        tracing::warn!(instance = %action.instance_id, hook = %action.hook, %err,
                            "lifecycle heartbeat failed");
                    }
                }
            }
        });
    }

    async fn heartbeat(&self, action: &LifecycleAction) -> Result<(), ProviderError> {
        let (region, name) = aws_group(&action.group)?;
        let clients = self.clients.region(region).await;
        let result = clients
            .autoscaling
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(name)
            .lifecycle_hook_name(&action.hook)
            .instance_id(&action.instance_id)
            .set_lifecycle_action_token(action.token.clone())
            .send()
            .await;
        let ok = result.is_ok();
        self.stats.heartbeat(ok);
        if let Some(o) = &self.observer {
            o.heartbeat(ok);
        }
        match result {
            Ok(_) => {
                tracing::debug!(instance = %action.instance_id, hook = %action.hook, "lifecycle heartbeat sent");
                Ok(())
            }
            Err(e) if no_active_action(&e) => {
                // Answered or expired meanwhile: nothing left to keep alive.
                self.holds
                    .lock()
                    .expect("holds lock")
                    .forget(&action.instance_id, &action.hook);
                Ok(())
            }
            Err(e) => {
                let err = error::map("RecordLifecycleActionHeartbeat", e);
                self.throttled("RecordLifecycleActionHeartbeat", &err);
                Err(err)
            }
        }
    }

    async fn complete(
        &self,
        action: &LifecycleAction,
        outcome: Outcome,
    ) -> Result<(), ProviderError> {
        let (region, name) = aws_group(&action.group)?;
        let clients = self.clients.region(region).await;
        let result = match outcome {
            Outcome::Continue => "CONTINUE",
            Outcome::Abandon => "ABANDON",
        };
        // The token when an event gave one; the instance id always, which is
        // what lets a restarted meshmirror answer holds it rediscovered.
        let sent = clients
            .autoscaling
            .complete_lifecycle_action()
            .auto_scaling_group_name(name)
            .lifecycle_hook_name(&action.hook)
            .instance_id(&action.instance_id)
            .set_lifecycle_action_token(action.token.clone())
            .lifecycle_action_result(result)
            .send()
            .await;
        match sent {
            Ok(_) => {}
            Err(e) if no_active_action(&e) => {
                tracing::warn!(instance = %action.instance_id, hook = %action.hook,
                    "no active lifecycle action to complete (answered before, or timed out)");
            }
            Err(e) => {
                let err = error::map("CompleteLifecycleAction", e);
                self.throttled("CompleteLifecycleAction", &err);
                return Err(err);
            }
        }
        self.memory.lock().expect("memory lock").answered(
            &action.group,
            &action.instance_id,
            action.kind,
            &action.hook,
        );
        self.holds
            .lock()
            .expect("holds lock")
            .forget(&action.instance_id, &action.hook);
        Ok(())
    }
}

/// AWS answers `ValidationError: No active Lifecycle Action found ...` for an
/// action already answered or timed out.
fn no_active_action<E: aws_sdk_autoscaling::error::ProvideErrorMetadata>(
    err: &aws_sdk_autoscaling::error::SdkError<E>,
) -> bool {
    error::code(err) == Some("ValidationError")
        && err
            .message()
            .is_some_and(|m| m.contains("No active Lifecycle Action"))
}

#[async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    async fn members(&self, group: &GroupRef) -> Result<Vec<Instance>, ProviderError> {
        self.inner.members(group).await
    }

    fn events(&self) -> Option<BoxEventStream> {
        crate::events::start(self.inner.clone())
    }

    fn answers_hooks(&self, group: &GroupRef, hooks: &[&str]) {
        // Owned hooks get heartbeats and are preferred when a group has
        // several: after a restart too, not only once answered here.
        let mut memory = self.inner.memory.lock().expect("memory lock");
        for hook in hooks {
            memory.own(group, hook);
        }
    }

    async fn complete_lifecycle(
        &self,
        action: &LifecycleAction,
        outcome: Outcome,
    ) -> Result<(), ProviderError> {
        self.inner.complete(action, outcome).await
    }
}
