//! meshmirror's gcp provider (being built; see its issue).
