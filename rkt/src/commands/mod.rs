//! One module per `rkt` command; each exposes its clap arguments and `run`.

pub mod fetch;
pub mod format;
pub mod image;
pub mod run;
pub mod trust;
pub mod version;
