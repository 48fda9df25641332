//! Cloud events to passes. Each event becomes a trigger of the mirror that
//! claims its group, and only that: the instance it names is kept for that
//! mirror's pass to ask the cloud about (and only about it, while the rest
//! of the group was read within the interval), and an advisory (a rebalance
//! notice, a scheduled maintenance) for the pass to record, so every write
//! goes through a pass. The event's acknowledgement waits until that
//! mirror has had a successful pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt, stream};
use kube::runtime::reflector::{ObjectRef, Store};
use meshmirror_provider::{Ack, GroupEvent, GroupEventKind};

use super::pass::Reconciler;
use crate::core::claims;
use crate::crd::ScalingGroupMirror;
use crate::metrics::EventLabels;

/// The acks each mirror's next successful pass answers.
pub type PendingAcks = Arc<Mutex<HashMap<ObjectRef<ScalingGroupMirror>, Vec<Ack>>>>;

/// Adds a failed pass's acks back to the mirror's pending ones, dropping
/// those the source gave up on, so a message redelivered while the pass keeps
/// failing leaves one waiter, not one per delivery.
pub fn keep_pending(kept: &mut Vec<Ack>, acks: Vec<Ack>) {
    kept.extend(acks);
    kept.retain(|a| !a.is_abandoned());
}

/// Maps provider events to the mirror that claims their group.
pub fn triggers(
    events: impl Stream<Item = GroupEvent> + Send + 'static,
    mirrors: Store<ScalingGroupMirror>,
    pending: PendingAcks,
    reconciler: Arc<Reconciler>,
) -> impl Stream<Item = ObjectRef<ScalingGroupMirror>> + Send + 'static {
    events
        .then(move |event| {
            let mirrors = mirrors.clone();
            let reconciler = reconciler.clone();
            let pending = pending.clone();
            async move {
                // Mapping before the cache is filled would drop events for
                // mirrors not seen yet.
                let _ = mirrors.wait_until_ready().await;
                stream::iter(trigger(event, &mirrors, &pending, &reconciler))
            }
        })
        .flatten()
}

/// The mirror one event triggers (none or one), with its ack kept pending.
fn trigger(
    event: GroupEvent,
    mirrors: &Store<ScalingGroupMirror>,
    pending: &PendingAcks,
    reconciler: &Reconciler,
) -> Option<ObjectRef<ScalingGroupMirror>> {
    let provider = event.group.provider();
    count(reconciler, provider, "received");
    // Only the mirror that claims the group acts on its events; denied,
    // invalid or outranked mirrors neither run for it nor hold its
    // acknowledgement back.
    let all = mirrors.state();
    let contenders = claims::contenders(all.iter().map(AsRef::as_ref), reconciler.allowed());
    let Some(claimant) = claims::claimant(&event.group, &contenders) else {
        count(reconciler, provider, "ignored");
        tracing::debug!(group = %event.group, "event for a group no mirror names; dropped");
        event.ack.ack();
        return None;
    };
    count(reconciler, provider, "handled");
    let target = ObjectRef::new(&claimant.name).within(&claimant.namespace);
    if let GroupEventKind::Advisory { instance_id, what } = &event.kind {
        tracing::info!(group = %event.group, instance = %instance_id, what = %what,
            "advisory cloud event recorded; it changes nothing");
        if let Some(mirror) = mirrors.get(&target) {
            let note =
                format!("{what} for instance {instance_id}; nothing changes until the cloud acts");
            reconciler.note_advisory(&mirror, note);
        }
    }
    if let GroupEventKind::Launched { instance_id }
    | GroupEventKind::Terminating { instance_id }
    | GroupEventKind::Terminated { instance_id }
    | GroupEventKind::Interrupted { instance_id } = &event.kind
        && let Some(mirror) = mirrors.get(&target)
    {
        reconciler.note_instance(&mirror, instance_id);
    }
    tracing::debug!(group = %event.group, kind = ?event.kind, "event triggers reconcile");
    if let Ok(mut p) = pending.lock() {
        p.entry(target.clone()).or_default().push(event.ack);
    }
    Some(target)
}

fn count(reconciler: &Reconciler, provider: &str, outcome: &str) {
    reconciler
        .metrics()
        .events
        .get_or_create(&EventLabels {
            provider: provider.to_string(),
            outcome: outcome.into(),
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> (Ack, futures::channel::oneshot::Receiver<()>) {
        Ack::new()
    }

    #[test]
    fn a_redelivered_message_leaves_one_waiter_while_passes_fail() {
        let mut kept = Vec::new();
        let (first, first_rx) = shared();
        keep_pending(&mut kept, vec![first]);
        assert_eq!(kept.len(), 1);
        // The source delivers the message again and stops waiting on the
        // first delivery's ack; each failed pass brings the new ack back.
        let mut receivers = vec![first_rx];
        for _ in 0..10 {
            receivers.clear();
            let (again, rx) = shared();
            receivers.push(rx);
            keep_pending(&mut kept, vec![again]);
            assert_eq!(kept.len(), 1, "one waiter per message, not per delivery");
        }
        // A live one is kept and answered once handled.
        let mut rx = receivers.pop().unwrap();
        kept.pop().unwrap().ack();
        assert_eq!(rx.try_recv(), Ok(Some(())));
    }
}
