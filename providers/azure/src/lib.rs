//! meshmirror's azure provider (being built; see its issue).
