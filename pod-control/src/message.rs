//! The JSON messages of the control frames, and their validation.
//!
//! Version 1:
//! - `{"version":1,"request":{"type":"ping"}}` -> `{"type":"pong","apps":[{"name":..,"running":..}]}`
//! - `{"version":1,"request":{"type":"stop","graceMs":N}}` -> `{"type":"stopping"}`; the guest
//!   sends SIGTERM to every app, SIGKILL to what is left after N ms, then ends the pod as usual.
//! - `{"version":1,"request":{"type":"enter","app":..,"argv":[..],"tty":null|{"rows":..,"cols":..},"term":..}}`
//!   -> `{"type":"started"}`, then the session frames, then an `Exit` frame.
//! - `{"version":1,"request":{"type":"attach","tty":{..},"term":..}}` (pods run with
//!   `--interactive` only) -> `{"type":"started"}`: the app starts on a terminal the session
//!   carries; the stream ends when the app does (its status goes to its status file as always).
//!
//! Any request can instead get `{"type":"error","message":..}`, and then the stream ends.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The protocol version this crate speaks; a request with another is refused with a message.
pub const PROTOCOL_VERSION: u32 = 1;
/// At most this many words in an `enter` command line.
pub const MAX_ARGV: usize = 1024;
/// At most this long, one word of an `enter` command line.
pub const MAX_WORD: usize = 4096;
/// `TERM` values longer than this are refused.
pub const MAX_TERM: usize = 64;
/// The longest grace period a `stop` may ask for.
pub const MAX_GRACE_MS: u64 = 10 * 60 * 1000;
/// appc app names are at most this long.
pub const MAX_APP_NAME: usize = 255;

/// The first frame of every stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestEnvelope {
    pub version: u32,
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Request {
    /// Is the guest's control server up? (readiness)
    Ping,
    /// Stop the pod: SIGTERM, `grace_ms`, SIGKILL.
    #[serde(rename_all = "camelCase")]
    Stop { grace_ms: u64 },
    /// Run `argv` in app `app`'s environment; with `tty`, on a terminal of that size.
    Enter {
        app: String,
        argv: Vec<String>,
        tty: Option<WindowSize>,
        term: Option<String>,
    },
    /// Start the `--interactive` pod's app on a terminal and carry it.
    Attach {
        tty: WindowSize,
        term: Option<String>,
    },
}

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Response {
    Pong { apps: Vec<AppState> },
    Stopping,
    Started,
    Error { message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppState {
    pub name: String,
    pub running: bool,
}

/// The last frame of a session: the command's exit code (128 + N when killed by signal N).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitReport {
    pub code: u8,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("the request is not valid JSON for protocol version {PROTOCOL_VERSION}: {0}")]
    Malformed(String),
    #[error(
        "the request speaks protocol version {0}, this guest speaks {PROTOCOL_VERSION}: use the \
         stage1 that started the pod"
    )]
    Version(u32),
    #[error("{0}")]
    Invalid(String),
}

impl RequestEnvelope {
    pub fn new(request: Request) -> RequestEnvelope {
        RequestEnvelope {
            version: PROTOCOL_VERSION,
            request,
        }
    }

    /// Parses and validates a request frame's payload.
    pub fn parse(payload: &[u8]) -> Result<Request, ValidationError> {
        // The version first, so that a newer host gets "wrong version", not "unknown field".
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let version: VersionOnly = serde_json::from_slice(payload)
            .map_err(|e| ValidationError::Malformed(e.to_string()))?;
        if version.version != PROTOCOL_VERSION {
            return Err(ValidationError::Version(version.version));
        }
        let envelope: RequestEnvelope = serde_json::from_slice(payload)
            .map_err(|e| ValidationError::Malformed(e.to_string()))?;
        envelope.request.validate()?;
        Ok(envelope.request)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Request {
    /// Bounds and shapes that serde cannot check.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let invalid = |message: String| Err(ValidationError::Invalid(message));
        match self {
            Request::Ping => Ok(()),
            Request::Stop { grace_ms } if *grace_ms > MAX_GRACE_MS => invalid(format!(
                "a grace period of {grace_ms} ms is longer than the {MAX_GRACE_MS} ms allowed"
            )),
            Request::Stop { .. } => Ok(()),
            Request::Enter {
                app,
                argv,
                tty,
                term,
            } => {
                if app.is_empty()
                    || app.len() > MAX_APP_NAME
                    || !app
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    return invalid(format!("{app:?} is not an app name"));
                }
                if argv.is_empty() || argv[0].is_empty() {
                    return invalid("the command to enter with is empty".to_string());
                }
                if argv.len() > MAX_ARGV {
                    return invalid(format!(
                        "the command has {} words (at most {MAX_ARGV})",
                        argv.len()
                    ));
                }
                if let Some(word) = argv.iter().find(|w| w.len() > MAX_WORD || w.contains('\0')) {
                    return invalid(format!(
                        "a word of the command is longer than {MAX_WORD} bytes or holds a NUL \
                         byte ({} bytes)",
                        word.len()
                    ));
                }
                check_tty(tty.as_ref(), term.as_deref())
            }
            Request::Attach { tty, term } => check_tty(Some(tty), term.as_deref()),
        }
    }
}

fn check_tty(tty: Option<&WindowSize>, term: Option<&str>) -> Result<(), ValidationError> {
    if let Some(size) = tty {
        if size.rows == 0 || size.cols == 0 {
            return Err(ValidationError::Invalid(format!(
                "a terminal of {}x{} characters",
                size.cols, size.rows
            )));
        }
    }
    if let Some(term) = term {
        if term.is_empty() || term.len() > MAX_TERM || !term.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ValidationError::Invalid(format!(
                "TERM={term:?} is not a terminal type"
            )));
        }
    }
    Ok(())
}

impl Response {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a response frame's payload (the guest's word: bounded by the frame, checked by
    /// serde, and only ever printed).
    pub fn parse(payload: &[u8]) -> Result<Response, ValidationError> {
        serde_json::from_slice(payload).map_err(|e| ValidationError::Malformed(e.to_string()))
    }
}

impl ExitReport {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn parse(payload: &[u8]) -> Result<ExitReport, ValidationError> {
        serde_json::from_slice(payload).map_err(|e| ValidationError::Malformed(e.to_string()))
    }
}

impl WindowSize {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn parse(payload: &[u8]) -> Result<WindowSize, ValidationError> {
        let size: WindowSize = serde_json::from_slice(payload)
            .map_err(|e| ValidationError::Malformed(e.to_string()))?;
        check_tty(Some(&size), None)?;
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enter(app: &str, argv: &[&str]) -> Request {
        Request::Enter {
            app: app.to_string(),
            argv: argv.iter().map(|w| w.to_string()).collect(),
            tty: Some(WindowSize { rows: 24, cols: 80 }),
            term: Some("xterm-256color".to_string()),
        }
    }

    #[test]
    fn requests_round_trip_in_the_documented_shape() {
        let bytes = RequestEnvelope::new(Request::Stop { grace_ms: 5000 }).to_bytes();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"version":1,"request":{"type":"stop","graceMs":5000}}"#
        );
        assert_eq!(
            RequestEnvelope::parse(&bytes).unwrap(),
            Request::Stop { grace_ms: 5000 }
        );
        let request = enter("web", &["/bin/sh", "-c", "tty"]);
        let bytes = RequestEnvelope::new(request.clone()).to_bytes();
        assert_eq!(RequestEnvelope::parse(&bytes).unwrap(), request);
        assert_eq!(
            RequestEnvelope::parse(br#"{"version":1,"request":{"type":"ping"}}"#).unwrap(),
            Request::Ping
        );
        assert_eq!(
            Response::parse(&Response::Started.to_bytes()).unwrap(),
            Response::Started
        );
    }

    #[test]
    fn malformed_and_out_of_bounds_requests_are_refused() {
        for (payload, says) in [
            (
                &br#"{"version":2,"request":{"type":"ping"}}"#[..],
                "version 2",
            ),
            (br#"{"request":{"type":"ping"}}"#, "not valid JSON"),
            (
                br#"{"version":1,"request":{"type":"reboot"}}"#,
                "not valid JSON",
            ),
            (
                br#"{"version":1,"request":{"type":"ping"},"x":1}"#,
                "not valid JSON",
            ),
            (
                br#"{"version":1,"request":{"type":"stop","graceMs":-1}}"#,
                "not valid JSON",
            ),
            (
                br#"{"version":1,"request":{"type":"stop","graceMs":999999999}}"#,
                "longer than",
            ),
            (b"\xff\xfe", "not valid JSON"),
        ] {
            let err = RequestEnvelope::parse(payload).unwrap_err().to_string();
            assert!(
                err.contains(says),
                "{}: {err}",
                String::from_utf8_lossy(payload)
            );
        }
        for (request, says) in [
            (enter("Web", &["sh"]), "not an app name"),
            (enter("../x", &["sh"]), "not an app name"),
            (enter("web", &[]), "empty"),
            (enter("web", &[""]), "empty"),
            (enter("web", &["a\0b"]), "NUL"),
            (
                Request::Attach {
                    tty: WindowSize { rows: 0, cols: 80 },
                    term: None,
                },
                "terminal of",
            ),
            (
                Request::Attach {
                    tty: WindowSize { rows: 1, cols: 1 },
                    term: Some("x\ny".to_string()),
                },
                "TERM=",
            ),
        ] {
            let err = request.validate().unwrap_err().to_string();
            assert!(err.contains(says), "{request:?}: {err}");
        }
        let many: Vec<&str> = vec!["x"; MAX_ARGV + 1];
        assert!(enter("web", &many).validate().is_err());
    }
}
