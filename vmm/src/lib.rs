//! The micro-VM monitor (filled in by the foundation issue).
