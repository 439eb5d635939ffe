//! Image trust: which OpenPGP keys may sign images of which names, and
//! checking an ACI's detached signature against them.
//!
//! Keys live where rkt kept them, one armored key per file named by its
//! lowercase hex fingerprint:
//!
//! ```text
//! <local-config>/trustedkeys/root.d/<fingerprint>             trusted for every image
//! <local-config>/trustedkeys/prefix.d/<prefix>/<fingerprint>  trusted for names under <prefix>
//! ```
//!
//! The same layout under `<system-config>` (vendor keys) is read too. A
//! prefix covers itself and its `/`-separated descendants: keys for
//! `example.com` sign `example.com/app`, and keys for `example.com/app` sign
//! `example.com/app/worker`.

pub mod keystore;
mod verify;

pub use keystore::{KeyInfo, Keystore};
pub use verify::verify_detached;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrustError {
    #[error("{path}: not an OpenPGP public key ({problem}); pass an armored key file (gpg --armor --export)")]
    BadKey { path: String, problem: String },
    #[error("{prefix:?} is not a valid image name prefix: {problem}")]
    BadPrefix { prefix: String, problem: String },
    #[error(
        "no keys are trusted for {name}; trust its signer with `rkt trust --prefix={name} KEYFILE`, \
         or skip the check with --insecure-options=image"
    )]
    NoKeys { name: String },
    #[error("{signature}: not an OpenPGP signature ({problem})")]
    BadSignature { signature: String, problem: String },
    #[error(
        "the signature {signature} does not verify with any key trusted for {name}; \
         the image or its signature is wrong, or the signer is not trusted for that name \
         (see `rkt trust`)"
    )]
    Unverified { signature: String, name: String },
    #[error(
        "{}: {source}; rkt reads only regular key files there, reached without links \
         (remove or replace the entry)", .dir.display()
    )]
    KeyStore {
        dir: std::path::PathBuf,
        #[source]
        source: crate::pod::safe_read::SafeReadError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}
