//! The mesh objects' part of settling a synced pass: the `MeshObjects`
//! condition, an Event when objects were written or a name is taken, and
//! which kinds the mirror owns now (so that later passes list only those).

use super::{Note, has_reason, set_condition};
use crate::controller::pass::gather::MeshRead;
use crate::controller::pass::writes::{MeshResult, WriteKind, WriteOutcome};
use crate::core::mesh::{MeshKinds, MeshWrites};
use crate::core::redact;
use crate::crd::ScalingGroupMirrorStatus;

/// The condition's type.
pub const CONDITION: &str = "MeshObjects";

/// What settling the mesh objects gives.
#[derive(Debug, Default, PartialEq)]
pub struct MeshSettled {
    pub events: Vec<Note>,
    /// The kinds owned after the writes (and those that could not be
    /// listed, which must be looked at again).
    pub owned: MeshKinds,
    /// Something failed: look again sooner than the interval would.
    pub failed: bool,
}

/// Sets or clears the `MeshObjects` condition of `status`.
pub fn settle(
    status: &mut ScalingGroupMirrorStatus,
    old: &ScalingGroupMirrorStatus,
    read: Option<&MeshRead>,
    writes: &MeshWrites,
    results: &[MeshResult],
    wanted: &[String],
    now: &str,
) -> MeshSettled {
    let mut out = MeshSettled::default();
    let Some(read) = read else {
        // Nothing was listed: the mirror has no mesh options and owns none.
        status.conditions.retain(|c| c.type_ != CONDITION);
        return out;
    };
    out.owned = owned_after(read, writes, results);
    let taken: Vec<String> = objects(results, |r| r.outcome == WriteOutcome::NameTaken);
    let failed: Vec<String> = objects(results, |r| r.outcome == WriteOutcome::Failed);
    let list_failed: Vec<&str> = read.failed.iter().map(|(_, why)| why.as_str()).collect();
    let condition = if !taken.is_empty() {
        let message = format!(
            "{} exist and are not this mirror's: left alone; rename or remove them, or set service.name",
            taken.join(", ")
        );
        (false, "NameTaken", message)
    } else if !failed.is_empty() || !list_failed.is_empty() {
        let mut why: Vec<String> = failed
            .iter()
            .map(|o| format!("writing {o} failed"))
            .collect();
        why.extend(list_failed.iter().map(|s| s.to_string()));
        // Tenants read status; the log keeps the full text.
        (false, "WriteFailed", redact::for_tenants(&why.join("; ")))
    } else if wanted.is_empty() {
        status.conditions.retain(|c| c.type_ != CONDITION);
        out.events.extend(written_note(results));
        return out;
    } else {
        (
            true,
            "Applied",
            format!("{} as the spec asks", wanted.join(", ")),
        )
    };
    let (ok, reason, message) = condition;
    if reason == "NameTaken" && !has_reason(old, CONDITION, reason) {
        out.events
            .push(Note::warning("MeshObjectNameTaken", message.clone()));
    }
    out.failed = !ok;
    out.events.extend(written_note(results));
    set_condition(status, old, CONDITION, (ok, reason, &message), now);
    out
}

fn objects(results: &[MeshResult], pick: impl Fn(&MeshResult) -> bool) -> Vec<String> {
    results
        .iter()
        .filter(|r| pick(r))
        .map(MeshResult::object)
        .collect()
}

/// A Normal Event naming what was created, updated or deleted.
fn written_note(results: &[MeshResult]) -> Option<Note> {
    let done: Vec<String> = results
        .iter()
        .filter(|r| r.outcome == WriteOutcome::Done)
        .map(|r| {
            let verb = match r.op {
                WriteKind::Create => "created",
                WriteKind::Delete => "deleted",
                _ => "updated",
            };
            format!("{verb} {}", r.object())
        })
        .collect();
    (!done.is_empty()).then(|| Note::normal("MeshObjectsSynced", done.join(", ")))
}

/// The kinds the mirror owns objects of once the writes landed, plus the
/// kinds that could not be listed (unknown, so looked at again).
fn owned_after(read: &MeshRead, writes: &MeshWrites, results: &[MeshResult]) -> MeshKinds {
    let deleted = |kind, name: &str| {
        results.iter().any(|r| {
            r.op == WriteKind::Delete
                && r.kind == kind
                && r.name == name
                && r.outcome == WriteOutcome::Done
        })
    };
    let kept = read
        .objects
        .iter()
        .filter(|o| !deleted(o.kind, &o.name))
        .map(|o| o.kind);
    let created = writes.creates.iter().map(|o| o.kind);
    let unknown = read.failed.iter().map(|(kind, _)| *kind);
    kept.chain(created).chain(unknown).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::mesh::{ActualMesh, MeshKind};

    /// (listed, results, wanted, the condition, Event reasons)
    type Case<'a> = (
        Option<&'a MeshRead>,
        &'a [MeshResult],
        &'a [String],
        Option<(&'a str, &'a str)>,
        Vec<&'a str>,
    );

    fn result(op: WriteKind, kind: MeshKind, name: &str, outcome: WriteOutcome) -> MeshResult {
        MeshResult {
            op,
            kind,
            name: name.into(),
            outcome,
        }
    }

    fn actual(kind: MeshKind, name: &str) -> ActualMesh {
        ActualMesh {
            kind,
            name: name.into(),
            uid: "u".into(),
            hash: None,
        }
    }

    #[test]
    fn the_condition_follows_how_the_writes_ended() {
        let wanted = vec!["Service api".to_string()];
        let read = MeshRead {
            listed: MeshKinds::ALL,
            ..MeshRead::default()
        };
        let created = [result(
            WriteKind::Create,
            MeshKind::Service,
            "api",
            WriteOutcome::Done,
        )];
        let taken = [result(
            WriteKind::Create,
            MeshKind::Service,
            "api",
            WriteOutcome::NameTaken,
        )];
        let failed = [result(
            WriteKind::Create,
            MeshKind::Service,
            "api",
            WriteOutcome::Failed,
        )];
        // (read, results, wanted, condition, Event reasons)
        let cases: Vec<Case<'_>> = vec![
            (None, &[], &[], None, vec![]),
            (Some(&read), &[], &[], None, vec![]),
            (
                Some(&read),
                &created,
                &wanted,
                Some(("True", "Applied")),
                vec!["MeshObjectsSynced"],
            ),
            (
                Some(&read),
                &taken,
                &wanted,
                Some(("False", "NameTaken")),
                vec!["MeshObjectNameTaken"],
            ),
            (
                Some(&read),
                &failed,
                &wanted,
                Some(("False", "WriteFailed")),
                vec![],
            ),
        ];
        for (i, (read, results, wanted, want, events)) in cases.into_iter().enumerate() {
            let mut status = ScalingGroupMirrorStatus::default();
            let out = settle(
                &mut status,
                &ScalingGroupMirrorStatus::default(),
                read,
                &MeshWrites::default(),
                results,
                wanted,
                "now",
            );
            let got = super::super::shown(&status, CONDITION);
            assert_eq!(got, want, "case {i}");
            let reasons: Vec<&str> = out.events.iter().map(|n| n.reason).collect();
            assert_eq!(reasons, events, "case {i}");
        }
    }

    #[test]
    fn the_kinds_owned_after_the_writes_drop_what_was_deleted() {
        let read = MeshRead {
            objects: vec![
                actual(MeshKind::Service, "a"),
                actual(MeshKind::Sidecar, "web"),
            ],
            listed: MeshKinds::default()
                .with(MeshKind::Service)
                .with(MeshKind::Sidecar),
            failed: vec![(MeshKind::ServiceEntry, "forbidden".into())],
        };
        let results = [result(
            WriteKind::Delete,
            MeshKind::Sidecar,
            "web",
            WriteOutcome::Done,
        )];
        let owned = owned_after(&read, &MeshWrites::default(), &results);
        let kinds: Vec<MeshKind> = owned.iter().collect();
        assert_eq!(
            kinds,
            [MeshKind::Service, MeshKind::ServiceEntry],
            "the Sidecar is gone; the unlisted kind stays to be looked at again"
        );
    }
}
