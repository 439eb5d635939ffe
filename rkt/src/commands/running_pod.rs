//! What `stop` and `enter` share: finding a pod that must be running, and its stage1
//! entrypoints.

use std::path::PathBuf;

use crate::error::RktError;
use crate::pod::{stage1, Pod, PodState, PodsDir};

/// Pod `text` (a UUID or unique prefix), which must be running; `what` completes "only
/// running pods can be ...".
pub fn load(pods: &PodsDir, text: &str, what: &str) -> Result<Pod, RktError> {
    let pod = Pod::load(pods, &pods.resolve(text)?)?;
    if pod.state() != PodState::Running {
        return Err(RktError::Message(format!(
            "pod {} is not running (it is {}); only running pods can be {what}",
            pod.uuid,
            pod.state().as_str()
        )));
    }
    Ok(pod)
}

/// The host path of the pod's stage1 entrypoint `annotation`, which must exist.
pub fn entrypoint(pod: &Pod, annotation: &str) -> Result<PathBuf, RktError> {
    let program = stage1::entrypoint(&pod.path(), annotation)?;
    if !program.is_file() {
        return Err(RktError::Message(format!(
            "the pod's stage1 entrypoint {} is missing; is its stage1 mounted?",
            program.display()
        )));
    }
    Ok(program)
}
