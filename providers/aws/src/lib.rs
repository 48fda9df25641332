//! meshmirror's aws provider (being built; see its issue).
