//! The entry writes a pass plans, and how each one ended.

use std::collections::{BTreeSet, HashSet};

use crate::core::desired::DesiredEntry;
use crate::core::mesh::MeshKind;
use crate::core::plan::{self, DeletePolicy};
use crate::workloadentry::ActualEntry;

/// What one pass writes to WorkloadEntries. Owns the desired entries it
/// writes (moved out of the desired state, not copied: a fleet-wide converge
/// holds every mirror's writes at once).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryWrites {
    pub creates: Vec<DesiredEntry>,
    pub updates: Vec<DesiredEntry>,
    /// Entries whose `Healthy` condition must be written (Cloud health mode),
    /// after the creates.
    pub health: Vec<(String, bool)>,
    /// Names to delete, leaving instances first.
    pub deletes: Vec<String>,
    /// Deletes held back by `maxDeletesPerPass` or the `UpsertOnly` policy.
    pub deferred_deletes: usize,
}

impl EntryWrites {
    /// The writes that turn `actual` into `desired` (see [`plan::plan`]).
    pub fn plan(
        desired: Vec<DesiredEntry>,
        actual: &[ActualEntry],
        leaving: &BTreeSet<String>,
        policy: DeletePolicy,
    ) -> EntryWrites {
        let planned = plan::plan(&desired, actual, leaving, policy);
        let creates: HashSet<String> = planned.creates.iter().map(|e| e.name.clone()).collect();
        let updates: HashSet<String> = planned.updates.iter().map(|e| e.name.clone()).collect();
        let mut out = EntryWrites {
            health: planned.health,
            deletes: planned.deletes,
            deferred_deletes: planned.deferred_deletes,
            ..EntryWrites::default()
        };
        // The plan lists them in the desired order; so does this.
        for entry in desired {
            if creates.contains(&entry.name) {
                out.creates.push(entry);
            } else if updates.contains(&entry.name) {
                out.updates.push(entry);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.creates.len() + self.updates.len() + self.health.len() + self.deletes.len()
    }
}

/// What a write was, as its metric label and the pass report name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WriteKind {
    Create,
    Update,
    Health,
    Delete,
}

impl WriteKind {
    pub const ALL: [WriteKind; 4] = [
        WriteKind::Create,
        WriteKind::Update,
        WriteKind::Delete,
        WriteKind::Health,
    ];

    /// The `op` label of `meshmirror_entry_writes_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteKind::Create => "create",
            WriteKind::Update => "update",
            WriteKind::Health => "health",
            WriteKind::Delete => "delete",
        }
    }
}

/// How a write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Done,
    Failed,
    /// The name is held by an entry that is not the mirror's.
    NameTaken,
}

/// One write's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    pub kind: WriteKind,
    pub name: String,
    pub outcome: WriteOutcome,
}

/// One mesh object write's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshResult {
    pub op: WriteKind,
    pub kind: MeshKind,
    pub name: String,
    pub outcome: WriteOutcome,
}

impl MeshResult {
    /// `Service api`, as status and Events name an object.
    pub fn object(&self) -> String {
        format!("{} {}", self.kind.kind(), self.name)
    }
}
