use thiserror::Error;

/// Why a manifest was refused. Both variants carry the JSON path of the field
/// at fault (`labels[1].name`, `app.exec`, ...); `.` means the whole document.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// The JSON did not parse, or a field had the wrong type or a value its
    /// type refuses (an identifier with capitals, a bad semver, ...).
    #[error("manifest field `{field}`: {message}")]
    Parse { field: String, message: String },
    /// The JSON parsed but breaks a rule that spans fields or values.
    #[error("manifest field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

impl ManifestError {
    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ManifestError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The JSON path of the offending field.
    pub fn field(&self) -> &str {
        match self {
            ManifestError::Parse { field, .. } | ManifestError::Invalid { field, .. } => field,
        }
    }
}

/// Deserializes `bytes` as `T`, turning a serde error into one that names the
/// path of the field where it happened.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ManifestError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        ManifestError::Parse {
            field,
            // serde_json appends " at line L column C"; keep it, it helps find the spot.
            message: inner.to_string(),
        }
    })?;
    de.end().map_err(|err| ManifestError::Parse {
        field: ".".to_string(),
        message: err.to_string(),
    })?;
    Ok(value)
}
