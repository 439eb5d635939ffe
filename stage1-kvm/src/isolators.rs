//! Isolators the kvm stage1 does not apply are said, never ignored in silence: one warning
//! line on stderr per app and isolator, before the VM starts. guest-init applies the rest
//! inside the guest (docs/security.md, "Inside the guest").

use appc::{ImageManifest, PodManifest};

use pod_control::isolators::APPLIED;

use crate::pod::PodPaths;

/// `(app, isolator)` for every isolator of the pod's apps that is not applied. An app without
/// an `app` section in the pod manifest runs its image's, so that one is checked.
pub fn not_applied(pod: &PodPaths, manifest: &PodManifest) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for app in &manifest.apps {
        let name = app.name.as_str();
        let isolators = match &app.app {
            Some(section) => section.isolators.clone(),
            None => std::fs::read(pod.app_manifest(name))
                .ok()
                .and_then(|bytes| ImageManifest::from_json(&bytes).ok())
                .and_then(|image| image.app)
                .map(|section| section.isolators)
                .unwrap_or_default(),
        };
        for isolator in isolators {
            if !APPLIED.contains(&isolator.name.as_str()) {
                found.push((name.to_string(), isolator.name.as_str().to_string()));
            }
        }
    }
    found
}

/// Prints [`not_applied`] as warnings.
pub fn warn_not_applied(pod: &PodPaths, manifest: &PodManifest) {
    for (app, isolator) in not_applied(pod, manifest) {
        eprintln!(
            "stage1-kvm: warning: app {app}: isolator {isolator} is not applied by the kvm \
             stage1 (it applies: {})",
            APPLIED.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_unsupported_isolators_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodPaths::new(dir.path().to_path_buf());
        let manifest = PodManifest::from_json(
            format!(
                r#"{{"acVersion":"0.8.11","acKind":"PodManifest","apps":[
                {{"name":"web","image":{{"id":"sha512-{}"}},"app":{{"exec":["/x"],"user":"0","group":"0",
                  "isolators":[{{"name":"os/linux/no-new-privileges","value":true}},
                               {{"name":"os/linux/selinux-context","value":{{"user":"u","role":"r","type":"t","level":"l"}}}}]}}}}]}}"#,
                "0".repeat(128)
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            not_applied(&pod, &manifest),
            [("web".to_string(), "os/linux/selinux-context".to_string())]
        );
    }
}
