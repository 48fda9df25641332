//! What a pass did, for the controller, tests and tools.

use std::time::Duration;

use super::error::PassError;
use super::writes::{MeshResult, WriteKind, WriteOutcome, WriteResult};

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub health_written: usize,
    pub deferred_deletes: usize,
    pub failed_writes: usize,
    pub hooks_answered: usize,
    pub status_written: bool,
    /// Why the pass failed, if it did.
    pub error: Option<PassError>,
    /// Writes that failed, as (operation, entry name).
    pub failed_names: Vec<(WriteKind, String)>,
    /// Entries not created because a same-named entry that is not the
    /// mirror's exists (also counted in `failed_writes`).
    pub names_taken: Vec<String>,
    /// When to run again.
    pub requeue: Duration,
    /// The mesh object writes and how each ended.
    pub mesh: Vec<MeshResult>,
    /// The cloud was asked about the instances events named only (the rest
    /// of the group as last read).
    pub named_only: bool,
}

impl PassReport {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.failed_writes == 0
    }

    /// A report counting `results`.
    pub fn counting(results: &[WriteResult]) -> PassReport {
        let mut report = PassReport::default();
        for r in results {
            if r.outcome != WriteOutcome::Done {
                if r.outcome == WriteOutcome::NameTaken {
                    report.names_taken.push(r.name.clone());
                }
                report.failed_writes += 1;
                report.failed_names.push((r.kind, r.name.clone()));
                continue;
            }
            match r.kind {
                WriteKind::Create => report.created += 1,
                WriteKind::Update => report.updated += 1,
                WriteKind::Delete => report.deleted += 1,
                WriteKind::Health => report.health_written += 1,
            }
        }
        report
    }
}
