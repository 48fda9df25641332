//! Re-reading a sim file when it changes, so a person can scale a group by
//! editing it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::{SimCloud, SimError};

/// How often `watch_file` looks at the file.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// An editor may be mid-write when we look; a change counts once two reads this
/// far apart agree, so a half-written file is never applied.
const SETTLE: Duration = Duration::from_millis(50);

impl SimCloud {
    /// Loads the file now (its errors are returned), then re-reads it every
    /// [`WATCH_INTERVAL`] and applies it when its content changed. A bad edit logs
    /// a warning and keeps the previous state. The task ends when every handle to
    /// the cloud is dropped; abort it to stop sooner. Needs a tokio runtime.
    pub fn watch_file(&self, path: impl AsRef<Path>) -> Result<JoinHandle<()>, SimError> {
        self.watch_file_every(path, WATCH_INTERVAL)
    }

    /// [`SimCloud::watch_file`] with another polling interval (tests use a short one).
    pub fn watch_file_every(
        &self,
        path: impl AsRef<Path>,
        every: Duration,
    ) -> Result<JoinHandle<()>, SimError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SimError::NoRuntime)?;
        let path = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(|source| SimError::Io {
            path: path.clone(),
            source,
        })?;
        self.replace_from_yaml(&text)?;
        tracing::info!(path = %path.display(), "sim file loaded");
        let cloud = Arc::downgrade(&self.inner);
        Ok(runtime.spawn(async move {
            let mut last = text;
            let mut unreadable = false;
            loop {
                tokio::time::sleep(every).await;
                if cloud.strong_count() == 0 {
                    return;
                }
                let text = match read_changed(&path, &last).await {
                    Ok(text) => text,
                    Err(err) => {
                        // Once per outage, not every tick.
                        if !unreadable {
                            tracing::warn!(path = %path.display(), %err, "cannot read sim file; keeping the previous state");
                        }
                        unreadable = true;
                        continue;
                    }
                };
                unreadable = false;
                let Some(text) = text else { continue };
                let Some(inner) = cloud.upgrade() else { return };
                let sim = SimCloud { inner };
                match sim.replace_from_yaml(&text) {
                    Ok(()) => tracing::info!(path = %path.display(), "sim file reloaded"),
                    Err(err) => {
                        sim.lock().file_edits_refused += 1;
                        tracing::warn!(path = %path.display(), %err, "sim file not reloaded; keeping the previous state")
                    }
                }
                // Remembered even when refused, so a bad edit warns once.
                last = text;
            }
        }))
    }
}

/// The file's new content, or `None` when it is unchanged or still changing
/// under us.
async fn read_changed(path: &Path, last: &str) -> std::io::Result<Option<String>> {
    let first = tokio::fs::read_to_string(path).await?;
    if first == last {
        return Ok(None);
    }
    tokio::time::sleep(SETTLE).await;
    let second = tokio::fs::read_to_string(path).await?;
    Ok((first == second).then_some(second))
}
