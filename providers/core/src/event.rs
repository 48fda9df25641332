use std::fmt;

use futures::channel::oneshot;

use crate::GroupRef;

/// What a cloud event says happened. Events are hints: the core always asks the
/// provider for the truth before it changes anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEventKind {
    Launched {
        instance_id: String,
    },
    Terminating {
        instance_id: String,
    },
    Terminated {
        instance_id: String,
    },
    /// Spot interruption or a stop: the instance is about to go.
    Interrupted {
        instance_id: String,
    },
    /// A rebalance recommendation: recorded, changes nothing.
    Advisory {
        instance_id: String,
        what: String,
    },
    /// Something changed in the group; reconcile it.
    Changed,
}

/// Tells the event's source that it was handled and may be forgotten (an SQS
/// delete, a Pub/Sub ack). Dropping it unacknowledged leaves the message to be
/// redelivered, so nothing received but unhandled is lost.
pub struct Ack(Option<oneshot::Sender<()>>);

impl Ack {
    /// An ack and the receiver its source waits on.
    pub fn new() -> (Ack, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Ack(Some(tx)), rx)
    }

    /// For sources that need no acknowledgement.
    pub fn none() -> Ack {
        Ack(None)
    }

    /// Whether nobody waits for this ack any more (the source gave up on the
    /// message, e.g. because it was delivered again): holding it is useless.
    pub fn is_abandoned(&self) -> bool {
        self.0.as_ref().is_some_and(oneshot::Sender::is_canceled)
    }

    pub fn ack(mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ack")
    }
}

/// A push notification naming a group.
#[derive(Debug)]
pub struct GroupEvent {
    pub group: GroupRef,
    pub kind: GroupEventKind,
    pub ack: Ack,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_is_abandoned_once_its_receiver_is_gone() {
        let (ack, rx) = Ack::new();
        assert!(!ack.is_abandoned());
        drop(rx);
        assert!(ack.is_abandoned());
        assert!(!Ack::none().is_abandoned());
    }
}
