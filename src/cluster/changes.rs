//! Change notices from a watch cache to the controller: a broadcast that a
//! slow receiver may fall behind on. A lost notice costs only latency: every
//! mirror's interval catches up.

use futures::{Stream, StreamExt};
use tokio::sync::broadcast;

/// The object a notice is about: a mirror whose entries somebody else
/// changed, or a WorkloadGroup that changed, appeared or went.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Named {
    pub namespace: String,
    pub name: String,
}

/// The notices sent on `sender` from now on, skipping any lost to lag.
pub fn subscribe<T: Clone + Send + 'static>(
    sender: &broadcast::Sender<T>,
    what: &'static str,
) -> impl Stream<Item = T> + Send + 'static {
    tokio_stream::wrappers::BroadcastStream::new(sender.subscribe()).filter_map(
        move |notice| async move {
            match notice {
                Ok(notice) => Some(notice),
                Err(err) => {
                    tracing::warn!(%err, what, "change notices dropped; intervals catch up");
                    None
                }
            }
        },
    )
}
