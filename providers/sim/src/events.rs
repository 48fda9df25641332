//! The sim's event feed: every change made through the driving API is pushed to
//! each subscriber, with a real [`Ack`] so tests can count what the consumer handled.

use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use meshmirror_provider::{Ack, BoxEventStream, GroupEvent, GroupEventKind, GroupRef};

#[derive(Default)]
pub(crate) struct EventHub {
    /// One unbounded channel per `events()` call: nothing is lost to a slow reader.
    subscribers: Vec<mpsc::UnboundedSender<GroupEvent>>,
    /// Acks handed out and not yet answered or dropped.
    unanswered: Vec<oneshot::Receiver<()>>,
    acked: u64,
    emitted: u64,
}

impl EventHub {
    pub(crate) fn subscribe(&mut self) -> BoxEventStream {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers.push(tx);
        rx.boxed()
    }

    pub(crate) fn emit(&mut self, group: &str, kind: GroupEventKind) {
        self.emitted += 1;
        tracing::debug!(group, ?kind, "sim event");
        self.count_answers();
        let unanswered = &mut self.unanswered;
        self.subscribers.retain(|tx| {
            let (ack, answer) = Ack::new();
            let event = GroupEvent {
                group: GroupRef::Sim {
                    group: group.to_string(),
                },
                kind: kind.clone(),
                ack,
            };
            // A failed send means the stream was dropped: forget that subscriber.
            let delivered = tx.unbounded_send(event).is_ok();
            if delivered {
                unanswered.push(answer);
            }
            delivered
        });
    }

    pub(crate) fn acked(&mut self) -> u64 {
        self.count_answers();
        self.acked
    }

    pub(crate) fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Moves answered acks into the count and forgets dropped ones.
    fn count_answers(&mut self) {
        let mut acked = 0;
        self.unanswered
            .retain_mut(|answer| match answer.try_recv() {
                Ok(Some(())) => {
                    acked += 1;
                    false
                }
                Ok(None) => true,
                Err(oneshot::Canceled) => false,
            });
        self.acked += acked;
    }
}
