//! One module per `rkt` command; each exposes its clap arguments and `run`.
//! Helpers shared by the pod commands: `app_args` (the image-argument
//! grammar), `pod_flags` (flag value parsers), `stage1_image` (choosing the
//! stage1), `pod_json` (rkt's JSON for pods).

pub mod app_args;
pub mod cat_manifest;
pub mod config;
pub mod enter;
pub mod fetch;
pub mod format;
pub mod gc;
pub mod image;
pub mod list;
pub mod pod_flags;
pub mod pod_json;
pub mod prepare;
pub mod rm;
pub mod run;
pub mod run_flags;
pub mod run_prepared;
pub mod running_pod;
pub mod snapshot;
pub mod stage1_image;
pub mod status;
pub mod stop;
pub mod superuser;
pub mod trust;
pub mod version;
