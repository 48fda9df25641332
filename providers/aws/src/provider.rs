//! `AwsProvider`: members of Auto Scaling groups, lifecycle-hook answers and
//! heartbeats, and the SQS event feed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_autoscaling::error::ProvideErrorMetadata;
use meshmirror_provider::{
    Advisory, BoxEventStream, FeedOutcome, GroupRef, HookDef, Instance, LifecycleAction,
    LifecycleKind, Observer, Outcome, Provider, ProviderError, TracingObserver,
};

use crate::clients::Clients;
use crate::config::AwsConfig;
use crate::describe::{self, HookInfo};
use crate::error;
use crate::heartbeat::Holds;
use crate::memory::Memory;
use crate::rounds::{Round, Rounds};
use crate::state::{self, AsgMember, Membership};
use crate::stats::{Stats, StatsSnapshot};

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
    /// The running heartbeat task, if any (stopped by `stand_down`).
    heartbeat_task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Bumped by `stand_down`: a pass that began in an ended term records no
    /// holds and starts no heartbeats.
    term: AtomicU64,
    stats: Stats,
    observer: Arc<dyn Observer>,
}

impl AwsProvider {
    /// Reports to a [`TracingObserver`] until given another with
    /// [`with_observer`](Self::with_observer).
    pub fn new(config: AwsConfig) -> Self {
        Self::build(config, Arc::new(TracingObserver))
    }

    /// Reports what the provider sees to `observer`. A building step, taken
    /// before the provider is used or cloned: the provider returned starts
    /// afresh from the same config (everything else is made lazily), sharing
    /// nothing with `self` or its clones.
    pub fn with_observer(self, observer: Arc<dyn Observer>) -> Self {
        Self::build(self.inner.config.clone(), observer)
    }

    fn build(config: AwsConfig, observer: Arc<dyn Observer>) -> Self {
        AwsProvider {
            inner: Arc::new(Inner {
                clients: Clients::new(config.clone()),
                rounds: Rounds::new(config.share_window),
                config,
                memory: Mutex::default(),
                hooks: Mutex::default(),
                holds: Mutex::default(),
                heartbeat_task: Mutex::default(),
                term: AtomicU64::new(0),
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
    /// A throttled call whose error the provider keeps from the core (the
    /// event feed, heartbeats, lookups it absorbs): counted and reported.
    pub(crate) fn throttled(&self, operation: &'static str, err: &ProviderError) {
        if matches!(err, ProviderError::Throttled { .. }) {
            self.stats.throttled();
            self.observer.throttled(operation);
        }
    }

    /// A throttled call whose error reaches the core as
    /// `ProviderError::Throttled`: only counted here, as the core's caller
    /// already counts it by the provider operation it called.
    fn throttled_surfaced(&self, err: &ProviderError) {
        if matches!(err, ProviderError::Throttled { .. }) {
            self.stats.throttled();
        }
    }

    /// What became of one queue message.
    pub(crate) fn message(&self, outcome: FeedOutcome) {
        self.stats.message(outcome);
        self.observer.feed_message(outcome);
    }

    /// An EC2 rebalance recommendation arrived.
    pub(crate) fn rebalance(&self) {
        self.stats.rebalance();
        self.observer.advisory(Advisory::RebalanceRecommendation);
    }

    /// Queue messages deleted.
    pub(crate) fn deleted(&self, n: u64) {
        self.stats.deleted(n);
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
            .inspect_err(|e| self.throttled_surfaced(e))?;
        let hooks = Arc::new(hooks);
        self.hooks
            .lock()
            .expect("hooks lock")
            .insert(group.clone(), (Instant::now(), hooks.clone()));
        Ok(hooks)
    }

    /// The region's shared `DescribeAutoScalingGroups` round for `group`.
    async fn round(&self, region: &str, name: &str) -> Result<Arc<Round>, ProviderError> {
        // Events are accepted from the regions mirrors ask about.
        self.memory
            .lock()
            .expect("memory lock")
            .mirrored_region(region);
        let clients = self.clients.region(region).await;
        let autoscaling = clients.autoscaling.clone();
        self.rounds
            .get(region, name, move |names| {
                describe::groups(autoscaling, names)
            })
            .await
            .inspect_err(|e| self.throttled_surfaced(e))
    }

    /// The group's hooks as `DescribeLifecycleHooks` lists them; a group
    /// that does not exist is `GroupNotFound`, as for members.
    async fn lifecycle_hooks(&self, group: &GroupRef) -> Result<Vec<HookDef>, ProviderError> {
        let (region, name) = aws_group(group)?;
        // The round (shared with the pass's members call) says whether the
        // group exists; an absent group's hooks would read as "none".
        let round = self.round(region, name).await?;
        if !round.groups.contains_key(name) {
            return Err(ProviderError::GroupNotFound(group.to_string()));
        }
        let hooks = self.hooks(group).await?;
        Ok(hooks
            .iter()
            .map(|h| HookDef {
                name: h.name.clone(),
                kind: if h.launching {
                    LifecycleKind::Launch
                } else {
                    LifecycleKind::Terminate
                },
            })
            .collect())
    }

    async fn members(self: &Arc<Self>, group: &GroupRef) -> Result<Vec<Instance>, ProviderError> {
        let (region, name) = aws_group(group)?;
        let round = self.round(region, name).await?;
        let Some(asg_members) = round.groups.get(name) else {
            return Err(ProviderError::GroupNotFound(group.to_string()));
        };
        self.described(group, asg_members, Scope::Group).await
    }

    /// The named instances that are members of the group: two calls (Auto
    /// Scaling, then EC2) per 50 ids, whatever the group's size.
    async fn instances(
        self: &Arc<Self>,
        group: &GroupRef,
        ids: &[String],
    ) -> Result<Vec<Instance>, ProviderError> {
        let (region, name) = aws_group(group)?;
        let clients = self.clients.region(region).await;
        let asg_members = describe::group_members_among(&clients.autoscaling, name, ids)
            .await
            .inspect_err(|e| self.throttled_surfaced(e))?;
        self.described(group, &asg_members, Scope::Some).await
    }

    /// The instances of `asg_members` with EC2's facts, hooks and spot
    /// status; `scope` says whether they are the whole group.
    async fn described(
        self: &Arc<Self>,
        group: &GroupRef,
        asg_members: &[AsgMember],
        scope: Scope,
    ) -> Result<Vec<Instance>, ProviderError> {
        let term = self.term.load(Ordering::SeqCst);
        let (region, name) = aws_group(group)?;
        let clients = self.clients.region(region).await;
        let in_group: Vec<_> = asg_members
            .iter()
            .filter_map(|m| match state::membership(&m.lifecycle_state) {
                Membership::Member { state, waiting } => Some((m, state, waiting)),
                Membership::NotMember => None,
            })
            .collect();
        let ids: Vec<String> = in_group.iter().map(|(m, _, _)| m.id.clone()).collect();
        let facts = match scope {
            _ if ids.is_empty() => Ok(HashMap::new()),
            Scope::Group => describe::group_instances(&clients.ec2, name, &ids).await,
            Scope::Some => describe::instances(&clients.ec2, &ids).await,
        }
        .inspect_err(|e| self.throttled_surfaced(e))?;
        describe::complete(group, &ids, &facts)?;
        let hooks = if in_group.iter().any(|(_, _, waiting)| waiting.is_some()) {
            Some(self.hooks(group).await?)
        } else {
            None
        };
        let now = Instant::now();
        let memory_window = self.config.interruption_memory;
        let spot_statuses = self.spot_statuses(&clients.ec2, &ids, &facts, now).await;
        let mut out = Vec::with_capacity(in_group.len());
        let mut held = Vec::new();
        {
            let mut memory = self.memory.lock().expect("memory lock");
            match scope {
                Scope::Group => {
                    memory.members_seen(group, ids.iter().map(String::as_str), now, memory_window)
                }
                Scope::Some => memory.some_members_seen(group, ids.iter().map(String::as_str)),
            }
            for (member, base, waiting) in in_group {
                let spot_status = spot_statuses.get(&member.id).map(String::as_str);
                let mut instance =
                    state::instance(region, member, facts.get(&member.id), base, spot_status);
                if let (Some(kind), Some(hooks)) = (waiting, &hooks) {
                    instance.lifecycle = action(&memory, group, &member.id, kind, hooks);
                    if let Some(action) = &instance.lifecycle
                        && kind == LifecycleKind::Terminate
                        && let Some(timeout) = hooks
                            .iter()
                            .find(|h| h.name == action.hook)
                            .and_then(|h| h.heartbeat)
                        && heartbeats_allowed(&memory, group, &action.hook)
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
                // Checked under the holds lock, which `stand_down` takes
                // after bumping the term: a pass of an ended term adds none.
                if self.term.load(Ordering::SeqCst) != term {
                    return Ok(out);
                }
                for (action, timeout) in &held {
                    holds.seen(action, *timeout, now);
                }
            }
            self.start_heartbeats(term);
        }
        Ok(out)
    }

    /// The spot request status of the members EC2 calls spot and running
    /// that a spot interruption warning named recently. The warning is only
    /// a hint (anyone who can send to the queue can forge one): EC2's own
    /// status is what takes a VM out. A failed lookup leaves them running
    /// this pass (EC2's instance state still takes them out once they stop).
    async fn spot_statuses(
        &self,
        ec2: &aws_sdk_ec2::Client,
        ids: &[String],
        facts: &HashMap<String, state::Ec2Facts>,
        now: Instant,
    ) -> HashMap<String, String> {
        let warned: Vec<String> = {
            let memory = self.memory.lock().expect("memory lock");
            ids.iter()
                .filter(|id| {
                    facts
                        .get(*id)
                        .is_some_and(|f| f.spot && !state::ec2_leaving(f.state.as_deref()))
                        && memory.is_spot_warned(id, now, self.config.interruption_memory)
                })
                .cloned()
                .collect()
        };
        if warned.is_empty() {
            return HashMap::new();
        }
        match describe::spot_statuses(ec2, &warned).await {
            Ok(statuses) => {
                tracing::debug!(
                    warned = warned.len(),
                    ?statuses,
                    "spot request statuses after a warning"
                );
                statuses
            }
            Err(err) => {
                self.throttled("DescribeSpotInstanceRequests", &err);
                tracing::warn!(warned = warned.len(), %err,
                    "cannot read spot request statuses; the warned instances stay in the mesh this pass");
                HashMap::new()
            }
        }
    }

    /// Exactly `hooks` are answered for `group` from now on: holds by any
    /// other hook of the group get no more heartbeats.
    fn answers_hooks(&self, group: &GroupRef, hooks: &[&str]) {
        let owned: BTreeSet<String> = hooks.iter().map(|h| h.to_string()).collect();
        let forgotten = self
            .holds
            .lock()
            .expect("holds lock")
            .retain_owned(group, &owned);
        if forgotten > 0 {
            tracing::info!(%group, forgotten, hooks = ?owned,
                "holds by hooks meshmirror no longer answers get no more heartbeats");
        }
        self.memory
            .lock()
            .expect("memory lock")
            .set_owned(group, owned);
    }

    /// The term ended: the heartbeat task stops at once (mid-call too), and
    /// holds and owned hooks are forgotten; the next term starts afresh.
    fn stand_down(&self) {
        let stopped = {
            let mut task = self.heartbeat_task.lock().expect("heartbeat lock");
            self.term.fetch_add(1, Ordering::SeqCst);
            task.take().inspect(|t| t.abort()).is_some()
        };
        self.holds.lock().expect("holds lock").clear();
        self.memory.lock().expect("memory lock").clear_owned();
        tracing::info!(heartbeats_stopped = stopped, "aws provider stood down");
    }

    fn start_heartbeats(self: &Arc<Self>, term: u64) {
        let mut task = self.heartbeat_task.lock().expect("heartbeat lock");
        if self.term.load(Ordering::SeqCst) != term
            || task.as_ref().is_some_and(|t| !t.is_finished())
        {
            return;
        }
        let weak = Arc::downgrade(self);
        let handle = tokio::spawn(async move {
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
        *task = Some(handle.abort_handle());
    }

    async fn heartbeat(&self, action: &LifecycleAction) -> Result<(), ProviderError> {
        let (region, name) = aws_group(&action.group)?;
        let clients = self.clients.region(region).await;
        let mut token = action.token.clone();
        loop {
            let result = clients
                .autoscaling
                .record_lifecycle_action_heartbeat()
                .auto_scaling_group_name(name)
                .lifecycle_hook_name(&action.hook)
                .instance_id(&action.instance_id)
                .set_lifecycle_action_token(token.clone())
                .send()
                .await;
            let ok = result.is_ok();
            self.stats.heartbeat(ok);
            self.observer.heartbeat(ok);
            let err = match result {
                Ok(_) => {
                    tracing::debug!(instance = %action.instance_id, hook = %action.hook, "lifecycle heartbeat sent");
                    return Ok(());
                }
                Err(e) => e,
            };
            match after_refusal(error::code(&err), err.message(), token.is_some()) {
                AfterRefusal::RetryWithoutToken => {
                    self.token_refused(action, err.message());
                    token = None;
                }
                AfterRefusal::AnsweredOrExpired => {
                    // Nothing left to keep alive.
                    self.holds
                        .lock()
                        .expect("holds lock")
                        .forget(&action.instance_id, &action.hook);
                    return Ok(());
                }
                AfterRefusal::Fail => {
                    let err = error::map("RecordLifecycleActionHeartbeat", err);
                    self.throttled("RecordLifecycleActionHeartbeat", &err);
                    return Err(err);
                }
            }
        }
    }

    /// AWS refused an event's token for `action`: it may be stale or
    /// forged, and the instance id alone still names the action.
    fn token_refused(&self, action: &LifecycleAction, why: Option<&str>) {
        tracing::warn!(instance = %action.instance_id, hook = %action.hook, why = why.unwrap_or(""),
            "lifecycle action token refused; retrying by instance id");
        self.memory
            .lock()
            .expect("memory lock")
            .token_refused(&action.instance_id, &action.hook);
        self.holds
            .lock()
            .expect("holds lock")
            .token_refused(&action.instance_id, &action.hook);
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
        let mut token = action.token.clone();
        loop {
            let sent = clients
                .autoscaling
                .complete_lifecycle_action()
                .auto_scaling_group_name(name)
                .lifecycle_hook_name(&action.hook)
                .instance_id(&action.instance_id)
                .set_lifecycle_action_token(token.clone())
                .lifecycle_action_result(result)
                .send()
                .await;
            let err = match sent {
                Ok(_) => break,
                Err(e) => e,
            };
            match after_refusal(error::code(&err), err.message(), token.is_some()) {
                AfterRefusal::RetryWithoutToken => {
                    self.token_refused(action, err.message());
                    token = None;
                }
                AfterRefusal::AnsweredOrExpired => {
                    tracing::warn!(instance = %action.instance_id, hook = %action.hook,
                        "no active lifecycle action to complete (answered before, or timed out)");
                    break;
                }
                AfterRefusal::Fail => {
                    let err = error::map("CompleteLifecycleAction", err);
                    self.throttled_surfaced(&err);
                    return Err(err);
                }
            }
        }
        self.memory
            .lock()
            .expect("memory lock")
            .answered(&action.instance_id, &action.hook);
        self.holds
            .lock()
            .expect("holds lock")
            .forget(&action.instance_id, &action.hook);
        Ok(())
    }
}

/// The action holding an instance, by the group's hooks for that transition
/// as `DescribeLifecycleHooks` lists them (an event naming any other hook is
/// ignored): a hook meshmirror answers first, with the token its event
/// gave; else the hook an event announced; else the first by name.
pub(crate) fn action(
    memory: &Memory,
    group: &GroupRef,
    instance_id: &str,
    kind: LifecycleKind,
    hooks: &[HookInfo],
) -> Option<LifecycleAction> {
    let launching = kind == LifecycleKind::Launch;
    let mut candidates: Vec<&str> = hooks
        .iter()
        .filter(|h| h.launching == launching)
        .map(|h| h.name.as_str())
        .collect();
    candidates.sort_unstable();
    let owned = |hook: &str| memory.owned_hooks(group).is_some_and(|o| o.contains(hook));
    let note = memory.hook_for(group, instance_id, kind, &candidates);
    let (hook, token) = match note {
        Some(note) if owned(&note.hook) => (note.hook.clone(), note.token.clone()),
        // Ours, even when only another team's hook was announced.
        _ => match candidates.iter().find(|h| owned(h)) {
            Some(hook) => (hook.to_string(), None),
            None => match note {
                Some(note) => (note.hook.clone(), note.token.clone()),
                None => (candidates.first()?.to_string(), None),
            },
        },
    };
    Some(LifecycleAction {
        group: group.clone(),
        instance_id: instance_id.to_string(),
        kind,
        hook,
        token,
    })
}

/// Only hooks meshmirror answers for the group now get heartbeats.
fn heartbeats_allowed(memory: &Memory, group: &GroupRef, hook: &str) -> bool {
    memory.owned_hooks(group).is_some_and(|o| o.contains(hook))
}

/// Whether a pass described a whole group or some of its members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Group,
    Some,
}

/// What follows a refused `CompleteLifecycleAction` or heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterRefusal {
    /// The token was refused (stale, or forged by whoever sent the event):
    /// the instance id alone still names the action.
    RetryWithoutToken,
    /// No such action: answered before, or timed out.
    AnsweredOrExpired,
    Fail,
}

/// AWS answers `ValidationError: No active Lifecycle Action found ...` for
/// an action already answered or timed out, and also for a token that does
/// not match; a malformed token is a `ValidationError` naming the token.
/// Only by instance id does "no active action" mean the action is gone.
fn after_refusal(code: Option<&str>, message: Option<&str>, token_sent: bool) -> AfterRefusal {
    let message = message.unwrap_or("");
    let validation = code == Some("ValidationError");
    let no_action = validation && message.contains("No active Lifecycle Action");
    let token_named = validation && message.to_ascii_lowercase().contains("token");
    if token_sent && (no_action || token_named) {
        AfterRefusal::RetryWithoutToken
    } else if no_action {
        AfterRefusal::AnsweredOrExpired
    } else {
        AfterRefusal::Fail
    }
}

#[async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    async fn members(&self, group: &GroupRef) -> Result<Vec<Instance>, ProviderError> {
        self.inner.members(group).await
    }

    async fn instances(
        &self,
        group: &GroupRef,
        ids: &[String],
    ) -> Result<Option<Vec<Instance>>, ProviderError> {
        self.inner.instances(group, ids).await.map(Some)
    }

    fn events(&self) -> Option<BoxEventStream> {
        crate::events::start(self.inner.clone())
    }

    async fn lifecycle_hooks(
        &self,
        group: &GroupRef,
    ) -> Result<Option<Vec<HookDef>>, ProviderError> {
        self.inner.lifecycle_hooks(group).await.map(Some)
    }

    fn answers_hooks(&self, group: &GroupRef, hooks: &[&str]) {
        // Owned hooks get heartbeats and are preferred when a group has
        // several: after a restart too, not only once answered here.
        self.inner.answers_hooks(group, hooks);
    }

    fn stand_down(&self) {
        self.inner.stand_down();
    }

    async fn complete_lifecycle(
        &self,
        action: &LifecycleAction,
        outcome: Outcome,
    ) -> Result<(), ProviderError> {
        self.inner.complete(action, outcome).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> GroupRef {
        GroupRef::Aws {
            region: "r".into(),
            name: name.into(),
        }
    }

    fn hook(name: &str, launching: bool) -> HookInfo {
        HookInfo {
            name: name.into(),
            launching,
            heartbeat: None,
        }
    }

    /// A note announced by an event: (group, hook, token, kind).
    type Note = (&'static str, &'static str, &'static str, LifecycleKind);

    struct Case {
        name: &'static str,
        hooks: Vec<HookInfo>,
        owned: Vec<&'static str>,
        notes: Vec<Note>,
        waiting: LifecycleKind,
        want: Option<(&'static str, Option<&'static str>)>,
    }

    #[test]
    fn the_action_holding_an_instance() {
        use LifecycleKind::{Launch, Terminate};
        let drain = || hook("drain", false);
        let theirs = || hook("theirs", false);
        let aaa = || hook("aaa-theirs", false);
        let ready = || hook("ready", true);
        let case = |name, hooks, owned, notes, waiting, want| Case {
            name,
            hooks,
            owned,
            notes,
            waiting,
            want,
        };
        let cases = [
            case(
                "no hook for the transition",
                vec![ready()],
                vec![],
                vec![],
                Terminate,
                None,
            ),
            case(
                "the only hook, no token",
                vec![drain()],
                vec![],
                vec![],
                Terminate,
                Some(("drain", None)),
            ),
            case(
                "the launch hook for a launch",
                vec![drain(), ready()],
                vec![],
                vec![],
                Launch,
                Some(("ready", None)),
            ),
            case(
                "the token from the event",
                vec![drain()],
                vec![],
                vec![("g", "drain", "t1", Terminate)],
                Terminate,
                Some(("drain", Some("t1"))),
            ),
            case(
                "an event naming a hook the group lacks is ignored",
                vec![drain()],
                vec!["drain"],
                vec![("g", "forged", "tf", Terminate)],
                Terminate,
                Some(("drain", None)),
            ),
            case(
                "an event naming a hook the group lacks picks nothing",
                vec![theirs(), aaa()],
                vec![],
                vec![("g", "forged", "tf", Terminate)],
                Terminate,
                Some(("aaa-theirs", None)),
            ),
            case(
                "an event of the other transition is ignored",
                vec![drain()],
                vec![],
                vec![("g", "drain", "tl", Launch)],
                Terminate,
                Some(("drain", None)),
            ),
            case(
                "an event for another group is ignored",
                vec![drain()],
                vec![],
                vec![("other", "drain", "to", Terminate)],
                Terminate,
                Some(("drain", None)),
            ),
            case(
                "ours, though only another team's hook was announced",
                vec![theirs(), drain()],
                vec!["drain"],
                vec![("g", "theirs", "t2", Terminate)],
                Terminate,
                Some(("drain", None)),
            ),
            case(
                "ours with our token, though theirs was announced later",
                vec![theirs(), drain()],
                vec!["drain"],
                vec![
                    ("g", "drain", "t1", Terminate),
                    ("g", "theirs", "t2", Terminate),
                ],
                Terminate,
                Some(("drain", Some("t1"))),
            ),
            case(
                "owning neither: the announced one",
                vec![drain(), theirs()],
                vec![],
                vec![("g", "theirs", "t2", Terminate)],
                Terminate,
                Some(("theirs", Some("t2"))),
            ),
            case(
                "owning neither, no event: the first by name",
                vec![theirs(), aaa()],
                vec![],
                vec![],
                Terminate,
                Some(("aaa-theirs", None)),
            ),
            case(
                "owned first, not first by name",
                vec![aaa(), drain()],
                vec!["drain"],
                vec![],
                Terminate,
                Some(("drain", None)),
            ),
        ];
        for c in cases {
            let mut memory = Memory::default();
            memory.set_owned(&group("g"), c.owned.iter().map(|h| h.to_string()).collect());
            let t0 = Instant::now();
            for (i, (g, hook, token, kind)) in c.notes.into_iter().enumerate() {
                let at = t0 + Duration::from_secs(i as u64);
                memory.hook_announced(group(g), "i-1", kind, hook.into(), Some(token.into()), at);
            }
            let got = action(&memory, &group("g"), "i-1", c.waiting, &c.hooks);
            let got = got.as_ref().map(|a| (a.hook.as_str(), a.token.as_deref()));
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn only_owned_hooks_get_heartbeats() {
        let mut memory = Memory::default();
        memory.answered("i-1", "drain");
        assert!(!heartbeats_allowed(&memory, &group("g"), "drain"));
        memory.set_owned(&group("g"), ["drain".to_string()].into());
        assert!(heartbeats_allowed(&memory, &group("g"), "drain"));
        assert!(!heartbeats_allowed(&memory, &group("g"), "theirs"));
        assert!(!heartbeats_allowed(&memory, &group("other"), "drain"));
    }

    #[test]
    fn a_refused_token_is_retried_by_instance_id() {
        use AfterRefusal::*;
        let validation = Some("ValidationError");
        let no_action = Some("No active Lifecycle Action found with instance ID i-1");
        let bad_token = Some("Invalid LifecycleActionToken: 1 validation error detected");
        // (code, message, token sent, want)
        let cases = [
            (validation, no_action, true, RetryWithoutToken),
            (validation, bad_token, true, RetryWithoutToken),
            (validation, no_action, false, AnsweredOrExpired),
            (validation, bad_token, false, Fail),
            (validation, Some("Group g not found"), true, Fail),
            (Some("Throttling"), Some("Rate exceeded"), true, Fail),
            (None, None, true, Fail),
        ];
        for (code, message, token_sent, want) in cases {
            assert_eq!(
                after_refusal(code, message, token_sent),
                want,
                "{code:?} {message:?} token sent: {token_sent}"
            );
        }
    }
}
