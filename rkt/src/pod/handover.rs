//! Everything `rkt run` / `run-prepared` does between a prepared pod and
//! exec'ing its stage1, except the exec itself: move the pod to `run/`
//! (keeping its lock), mount its overlays, write the `--dns`/`--hosts-entry`
//! files, build the `run` entrypoint's
//! command line, and let the lock descriptor survive the exec.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::stage1::{run_invocation, RunOptions, Stage1Invocation, ENV_LOCK_FD};
use super::state::Pod;
use super::{dns, layout, mounts, overlay, PodError};

/// Hands `pod` (prepared, or just prepared by us and still `preparing`) to
/// the point of exec: returns the stage1 invocation to exec. `tree_dir` is
/// the store's tree directory (`<dir>/cas/tree`).
///
/// On error the overlays mounted here are taken down again; the pod stays
/// in `run/` with our lock, and reads as `exited` (for gc) once we exit.
pub fn hand_over(
    pod: &mut Pod,
    tree_dir: &Path,
    options: &RunOptions,
) -> Result<Stage1Invocation, PodError> {
    pod.mark_running()?;
    let dir = pod.path();
    let result = (|| {
        // lstat through the pod's descriptor: a link planted there is not followed.
        let overlay =
            super::safe_read::metadata(pod.lock().as_fd(), Path::new(layout::OVERLAY_PREPARED))
                .map_err(|source| PodError::PodFile {
                    context: format!("checking the overlay marker of pod {}", pod.uuid),
                    source,
                })?;
        if overlay.is_some() {
            let apps: Vec<String> = pod
                .manifest()?
                .map(|m| m.apps.iter().map(|a| a.name.to_string()).collect())
                .unwrap_or_default();
            overlay::mount_pod(&dir, tree_dir, &apps)?;
        }
        dns::write_files(
            &layout::stage1_rootfs(&dir),
            &options.resolv,
            &options.hosts,
        )?;
        let call = run_invocation(pod, options)?;
        pod.lock().keep_across_exec().map_err(PodError::io(format!(
            "passing the lock of pod {} on",
            pod.uuid
        )))?;
        Ok(call)
    })();
    if result.is_err() {
        let _ = mounts::unmount_all_under(&dir);
    }
    result
}

impl Stage1Invocation {
    /// The command to `exec()` (`std::os::unix::process::CommandExt::exec`):
    /// program, arguments, the pod directory as working directory, and
    /// `RKT_LOCK_FD`. The caller's other environment variables pass through.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .arg0(&self.program)
            .args(&self.args)
            .current_dir(&self.working_dir)
            .env(ENV_LOCK_FD, self.lock_fd.to_string());
        command
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;
    use crate::pod::manifest::{AppOverrides, AppRequest, PodRequest};
    use crate::pod::prepare::{prepare_pod, PodSource, PrepareRequest};
    use crate::pod::{PodState, PodsDir};
    use crate::store::{LockMode, Store};
    use crate::testutil::{aci_with_modes, import, import_tar, manifest};

    const STAGE1_EXTRA: &str = r#","annotations":[
        {"name":"coreos.com/rkt/stage1/run","value":"/init"},
        {"name":"coreos.com/rkt/stage1/interface-version","value":"6"}]"#;

    fn prepared_pod(data: &Path, overlay: bool) -> (Store, PodsDir, Pod) {
        let store = Store::open(data, LockMode::Shared).unwrap();
        let stage1 = import(
            &store,
            &manifest("example.com/stage1", "1", STAGE1_EXTRA),
            &[("init", b"#!/bin/sh\n")],
        );
        let app = import_tar(
            &store,
            &aci_with_modes(
                &manifest("example.com/web", "1", ""),
                &[
                    ("etc/web.conf", b"port=80\n", 0o644),
                    ("bin/sh", b"", 0o755),
                ],
            ),
        );
        let record = store.image(&app).unwrap();
        let pods = PodsDir::open(data).unwrap();
        let prepared = prepare_pod(
            &store,
            &pods,
            &PrepareRequest {
                stage1,
                pod: PodSource::Flags(PodRequest {
                    apps: vec![AppRequest {
                        image_id: app,
                        image: record.manifest,
                        overrides: AppOverrides::default(),
                        default_name: None,
                    }],
                    ..PodRequest::default()
                }),
                overlay,
                disk_limit: None,
            },
        )
        .unwrap();
        let mut pod = prepared.pod;
        pod.mark_prepared().unwrap();
        (store, pods, pod)
    }

    fn options() -> RunOptions {
        RunOptions {
            net: "none".into(),
            local_config: PathBuf::from("/etc/rkt"),
            hostname: Some("box".into()),
            ipc: Some("private".into()),
            resolv: dns::Resolv::from_flags(&["10.0.0.53".into()], &[], &[], None).unwrap(),
            ..RunOptions::default()
        }
    }

    #[test]
    fn a_copied_pod_is_locked_in_run_with_stage1_args_for_version_6() {
        let data = tempfile::tempdir().unwrap();
        let (_store, pods, pod) = prepared_pod(data.path(), false);
        // run-prepared loads the pod afresh.
        let mut pod = Pod::load(&pods, &pod.uuid).unwrap();
        let call = hand_over(&mut pod, &data.path().join("cas/tree"), &options()).unwrap();
        assert_eq!(
            Pod::load(&pods, &pod.uuid).unwrap().state(),
            PodState::Running
        );
        assert_eq!(call.program, pod.path().join("stage1/rootfs/init"));
        assert!(call.program.is_file());
        assert_eq!(
            call.args,
            [
                "--net=none",
                "--local-config=/etc/rkt",
                "--hostname=box",
                "--dns-conf-mode=resolv=stage0,hosts=default",
                "--ipc=private",
                pod.uuid.as_str()
            ]
        );
        assert_eq!(call.working_dir, pod.path());
        assert!(
            fs::read_to_string(pod.path().join("stage1/rootfs/etc/rkt-resolv.conf"))
                .unwrap()
                .contains("nameserver 10.0.0.53\n")
        );
        let command = call.command();
        let lock_fd = call.lock_fd.to_string();
        assert!(command
            .get_envs()
            .any(|(k, v)| k == ENV_LOCK_FD && v == Some(lock_fd.as_ref())));
        // --warm-start=false reaches the stage1 only when given.
        let cold = run_invocation(
            &pod,
            &RunOptions {
                no_warm_start: true,
                ..options()
            },
        )
        .unwrap();
        assert!(cold.args.iter().any(|a| a == "--warm-start=false"));
        // The handover refuses a pod that is not prepared any more.
        let mut again = Pod::load(&pods, &pod.uuid).unwrap();
        assert!(hand_over(&mut again, Path::new("/nonexistent"), &options()).is_err());
        drop(pod);
        assert_eq!(
            Pod::load(&pods, &again.uuid).unwrap().state(),
            PodState::Exited
        );
    }

    #[test]
    fn an_overlay_pod_gets_its_mounts_and_they_unmount() {
        if !nix::unistd::geteuid().is_root() {
            return; // overlay mounts need root; the copy test covers the rest
        }
        let data = tempfile::tempdir().unwrap();
        let (_store, pods, pod) = prepared_pod(data.path(), true);
        let mut pod = Pod::load(&pods, &pod.uuid).unwrap();
        let dir_before = pod.path();
        assert!(!dir_before.join("stage1/rootfs/init").exists());
        let call = hand_over(&mut pod, &data.path().join("cas/tree"), &options()).unwrap();
        let dir = pod.path();
        assert!(call.program.is_file(), "stage1 overlay not mounted");
        let app = dir.join("stage1/rootfs/opt/stage2/web");
        assert_eq!(
            fs::read_to_string(app.join("rootfs/etc/web.conf")).unwrap(),
            "port=80\n"
        );
        assert!(app.join("manifest").is_file());
        // Writes land in the pod's upper directory, not in the store.
        fs::write(app.join("rootfs/etc/web.conf"), "port=8080\n").unwrap();
        let tree = fs::read_to_string(dir.join("appsinfo/web/treeStoreID")).unwrap();
        assert_eq!(
            fs::read_to_string(
                dir.join("overlay")
                    .join(&tree)
                    .join("upper/web/etc/web.conf")
            )
            .unwrap(),
            "port=8080\n"
        );
        assert_eq!(
            fs::read_to_string(
                data.path()
                    .join("cas/tree")
                    .join(&tree)
                    .join("rootfs/etc/web.conf")
            )
            .unwrap(),
            "port=80\n"
        );
        assert_eq!(mounts::unmount_all_under(&dir).unwrap(), 2);
        assert!(mounts::mounts_under(&dir).unwrap().is_empty());
    }
}
