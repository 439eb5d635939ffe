//! The one error type commands return; each variant's message is a complete
//! line for the user (what went wrong, and what to do about it).

use thiserror::Error;

use crate::extract::ExtractError;
use crate::fetch::FetchError;
use crate::image::aci::AciError;
use crate::pod::PodError;
use crate::store::StoreError;
use crate::trust::TrustError;

#[derive(Debug, Error)]
pub enum RktError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Aci(#[from] AciError),
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A complete message built by the command.
    #[error("{0}")]
    Message(String),
    /// The command line is wrong (exit status 2, as clap's own errors).
    #[error("{0}")]
    Usage(String),
}

impl RktError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RktError {
        let context = context.into();
        move |source| RktError::Io { context, source }
    }
}
