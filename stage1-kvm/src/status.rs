//! The pod's exit code (contract items 5 and 7): guest-init leaves each app's status in
//! `stage1/rootfs/rkt/status/<app>` (decimal and a newline); the pod exits with the first app
//! (in manifest order) whose status is not 0, else 0. An app without a status file, or with
//! one that is not a status, means the guest did not finish its job: a stage1 error (254).

use std::fs;
use std::path::Path;

use crate::error::Stage1Error;

/// Longest status file we read: a status is at most "255\n"; the guest is not trusted.
const MAX_STATUS_BYTES: u64 = 16;

/// Reads every app's status from `status_dir` and decides the pod's exit code.
pub fn pod_exit_code(status_dir: &Path, apps: &[String]) -> Result<i32, Stage1Error> {
    let mut missing = Vec::new();
    let mut first_failure = None;
    for app in apps {
        match read_status(&status_dir.join(app))? {
            None => missing.push(app.as_str()),
            Some(0) => {}
            Some(code) => {
                first_failure.get_or_insert(code);
            }
        }
    }
    if !missing.is_empty() {
        return Err(Stage1Error::Status(format!(
            "the pod's VM ended without the exit status of app {} (the guest did not finish \
             setting up or running it); rerun with --debug to see the guest console",
            missing.join(", ")
        )));
    }
    Ok(first_failure.unwrap_or(0))
}

/// One app's status: None when there is no file yet.
fn read_status(path: &Path) -> Result<Option<i32>, Stage1Error> {
    use std::io::Read;
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(Stage1Error::io(format!("reading {}", path.display()))(err));
        }
    };
    let mut text = String::new();
    file.take(MAX_STATUS_BYTES)
        .read_to_string(&mut text)
        .map_err(Stage1Error::io(format!("reading {}", path.display())))?;
    text.trim()
        .parse::<u8>()
        .map(|code| Some(i32::from(code)))
        .map_err(|_| Stage1Error::BadFile {
            path: path.to_path_buf(),
            problem: format!("{:?} is not an exit status (0 to 255)", text.trim()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn first_failing_app_in_manifest_order_wins() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "0\n").unwrap();
        fs::write(dir.path().join("b"), "42\n").unwrap();
        fs::write(dir.path().join("c"), "1\n").unwrap();
        assert_eq!(
            pod_exit_code(dir.path(), &apps(&["a", "b", "c"])).unwrap(),
            42
        );
        assert_eq!(pod_exit_code(dir.path(), &apps(&["c", "b"])).unwrap(), 1);
        assert_eq!(pod_exit_code(dir.path(), &apps(&["a"])).unwrap(), 0);
        fs::write(dir.path().join("k"), "137").unwrap();
        assert_eq!(pod_exit_code(dir.path(), &apps(&["a", "k"])).unwrap(), 137);
    }

    #[test]
    fn missing_or_garbled_statuses_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "0\n").unwrap();
        let err = pod_exit_code(dir.path(), &apps(&["a", "b", "c"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("app b, c"), "{err}");
        for garbage in ["", "256", "-1", "ok", "1234567890123456789012"] {
            fs::write(dir.path().join("g"), garbage).unwrap();
            assert!(
                pod_exit_code(dir.path(), &apps(&["g"])).is_err(),
                "{garbage:?}"
            );
        }
    }
}
