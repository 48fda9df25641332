use std::path::PathBuf;

/// Why a driving call or a sim file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The YAML file is malformed; the message names the field, e.g.
    /// `groups.web.instances[2].state: unknown variant "Runing", ...`.
    #[error("invalid sim file: {0}")]
    Invalid(String),
    #[error("cannot read sim file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sim has no group named {0:?}")]
    NoGroup(String),
    #[error("sim group {group:?} has no instance {id:?}")]
    NoInstance { group: String, id: String },
    #[error("sim already has an instance {id:?} (in group {group:?}); ids are never reused")]
    InstanceExists { group: String, id: String },
    #[error("watching a sim file needs a running tokio runtime")]
    NoRuntime,
}
