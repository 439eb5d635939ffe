//! App exit statuses, from guest-init to the host: guest-init connects to host port
//! [`crate::ports::STATUS_PORT`] before any app starts and sends one `Status` frame per app
//! as soon as `wait` tells it the app's status. The host writes rkt's status files itself
//! (`stage1/rootfs/rkt/status/<app>`); the guest has no way to write them. Apps cannot
//! forge a report: the host accepts one connection on that port, and guest-init has made it
//! before the first app runs.

use serde::{Deserialize, Serialize};

use crate::message::MAX_APP_NAME;

/// One app's exit status: the exit code, 128 + N for death by signal N, or 125/126/127 for
/// an app that could not be set up / executed / found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppStatus {
    pub app: String,
    pub status: u8,
}

impl AppStatus {
    /// The JSON payload of a `Status` frame.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a `Status` frame's payload; None for anything that is not one, or names an app
    /// that no appc name could be (the caller also checks it is one of the pod's apps).
    pub fn from_json(payload: &[u8]) -> Option<AppStatus> {
        let status: AppStatus = serde_json::from_slice(payload).ok()?;
        let name_ok = !status.app.is_empty()
            && status.app.len() <= MAX_APP_NAME
            && status
                .app
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        name_ok.then_some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_garbage_is_refused() {
        let status = AppStatus {
            app: "web-1".into(),
            status: 42,
        };
        assert_eq!(AppStatus::from_json(&status.to_json()), Some(status));
        for bad in [
            &br#"{"app":"../x","status":1}"#[..],
            br#"{"app":"","status":1}"#,
            br#"{"app":"a","status":256}"#,
            br#"{"app":"a","status":1,"more":1}"#,
            b"not json",
        ] {
            assert_eq!(AppStatus::from_json(bad), None, "{bad:?}");
        }
    }
}
