//! An app's environment, as the appc ACE spec and rkt give it.
//!
//! First the executor's defaults (`PATH`, `AC_APP_NAME`, `container`), then the app's own
//! `environment` entries in manifest order, each replacing a default or an earlier entry of the
//! same name in place. The pod manifest's entries already carry rkt's precedence (image env,
//! `--set-env-file`, `--set-env`, `--environment`; stage0 merged them), so guest-init only adds
//! the defaults underneath. `AC_METADATA_URL` is not set: there is no metadata service.

use appc::NameValue;
use thiserror::Error;

use crate::lookup::DEFAULT_PATH;

/// The value of `container`, which tells a program which executor runs it.
pub const CONTAINER: &str = "rkt";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvError {
    #[error(
        "environment variable {name:?} has an invalid name (empty, or containing `=` or a NUL \
         byte); rename it in the image or the --environment/--set-env flags"
    )]
    BadName { name: String },

    #[error(
        "environment variable {name} has a value containing a NUL byte; remove it from the \
         value"
    )]
    BadValue { name: String },
}

/// The complete environment of app `app_name`, as ordered `(name, value)` pairs.
pub fn app_environment(
    app_name: &str,
    entries: &[NameValue],
) -> Result<Vec<(String, String)>, EnvError> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("AC_APP_NAME".to_owned(), app_name.to_owned()),
        ("container".to_owned(), CONTAINER.to_owned()),
    ];
    for entry in entries {
        let (name, value) = (entry.name.as_str(), entry.value.as_str());
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(EnvError::BadName {
                name: name.to_owned(),
            });
        }
        if value.contains('\0') {
            return Err(EnvError::BadValue {
                name: name.to_owned(),
            });
        }
        match env.iter_mut().find(|(existing, _)| existing == name) {
            Some(slot) => slot.1 = value.to_owned(),
            None => env.push((name.to_owned(), value.to_owned())),
        }
    }
    Ok(env)
}

/// The value of `name` in `env`.
pub fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .find(|(existing, _)| existing == name)
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, value: &str) -> NameValue {
        NameValue {
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    #[test]
    fn defaults_come_first() {
        let env = app_environment("web", &[]).unwrap();
        assert_eq!(
            env,
            vec![
                ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
                ("AC_APP_NAME".to_owned(), "web".to_owned()),
                ("container".to_owned(), "rkt".to_owned()),
            ]
        );
        assert_eq!(get(&env, "AC_METADATA_URL"), None);
    }

    #[test]
    fn app_entries_override_defaults_and_earlier_entries_in_place() {
        let env = app_environment(
            "web",
            &[
                entry("FOO", "image"),
                entry("PATH", "/opt/bin:/bin"),
                entry("BAR", "1"),
                entry("FOO", "flag"),
            ],
        )
        .unwrap();
        let names: Vec<_> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["PATH", "AC_APP_NAME", "container", "FOO", "BAR"]);
        assert_eq!(get(&env, "PATH"), Some("/opt/bin:/bin"));
        assert_eq!(get(&env, "FOO"), Some("flag"));
        assert_eq!(get(&env, "BAR"), Some("1"));
        // Empty values are values.
        let env = app_environment("web", &[entry("EMPTY", "")]).unwrap();
        assert_eq!(get(&env, "EMPTY"), Some(""));
    }

    #[test]
    fn names_and_values_that_exec_cannot_carry_are_refused() {
        assert!(matches!(
            app_environment("web", &[entry("A=B", "x")]),
            Err(EnvError::BadName { .. })
        ));
        assert!(matches!(
            app_environment("web", &[entry("A", "x\0y")]),
            Err(EnvError::BadValue { .. })
        ));
    }
}
