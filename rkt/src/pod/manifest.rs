//! Building the reified pod manifest (`pod`) from the images and the user's
//! flags, as rkt's stage0 did: each app carries a complete `app` section
//! (the image's, with the flags' overrides applied), its image pinned by ID,
//! the environment merged in rkt's order, and every image mount point
//! satisfied by a mount.
//!
//! Pure: no I/O, so every rule here is unit tested.

use std::collections::BTreeMap;

use appc::{
    AcIdentifier, AcName, AcVersion, Annotation, App, ImageId, ImageManifest, ImageRef, Isolator,
    Mount, NameValue, PodApp, PodManifest, PodPort, Volume, VolumeKind, APPC_SPEC_VERSION,
    POD_MANIFEST_KIND,
};

use super::PodError;

/// One app as the user asked for it: an image and the per-app flags.
#[derive(Debug, Clone)]
pub struct AppRequest {
    pub image_id: ImageId,
    pub image: ImageManifest,
    pub overrides: AppOverrides,
    /// The app's name unless `--name` gives one: for a Docker/OCI image, its
    /// repository's last path element (`app_name_from`); `None`: from the
    /// image manifest's name, as rkt did for ACIs.
    pub default_name: Option<AcName>,
}

/// The per-app flags (`--exec`, `--user`, ...); `None`/empty = keep the
/// image's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppOverrides {
    pub name: Option<AcName>,
    pub exec: Option<String>,
    /// Arguments after `--`, appended to the exec line.
    pub args: Vec<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub supplementary_gids: Option<Vec<u32>>,
    pub working_dir: Option<String>,
    pub readonly_rootfs: bool,
    /// `--environment`: highest precedence.
    pub environment: Vec<NameValue>,
    pub mounts: Vec<Mount>,
    /// Isolators from `--memory`, `--cpu`, `--cpu-shares`, ...; each replaces
    /// the image's isolator of the same name.
    pub isolators: Vec<Isolator>,
    pub annotations: Vec<Annotation>,
    pub user_annotations: BTreeMap<String, String>,
    pub user_labels: BTreeMap<String, String>,
}

/// The whole pod as the user asked for it.
#[derive(Debug, Clone, Default)]
pub struct PodRequest {
    pub apps: Vec<AppRequest>,
    pub volumes: Vec<Volume>,
    /// `--mount` given before the first image: applies to every app.
    pub global_mounts: Vec<Mount>,
    /// `--inherit-env`: the caller's environment (lowest precedence).
    pub inherited_env: Vec<NameValue>,
    /// `--set-env-file` contents, in order.
    pub env_file: Vec<NameValue>,
    /// `--set-env`, in order.
    pub set_env: Vec<NameValue>,
    pub ports: Vec<PodPort>,
}

/// The manifest, plus warnings to show the user.
#[derive(Debug, Clone)]
pub struct BuiltManifest {
    pub manifest: PodManifest,
    pub warnings: Vec<String>,
}

/// rkt's annotation saying whether apps may be added later (`app add`).
pub const MUTABLE_ANNOTATION: &str = "coreos.com/rkt/stage1/mutable";

pub fn build(request: &PodRequest) -> Result<BuiltManifest, PodError> {
    let mut warnings = Vec::new();
    let mut volumes = request.volumes.clone();
    let mut apps: Vec<PodApp> = Vec::new();
    for app in &request.apps {
        let name = match (&app.overrides.name, &app.default_name) {
            (Some(name), _) | (None, Some(name)) => name.clone(),
            (None, None) => app_name_from_image(&app.image.name)?,
        };
        if apps.iter().any(|existing| existing.name == name) {
            return Err(PodError::Invalid(format!(
                "two apps are named {name}; give one of them another name with --name"
            )));
        }
        let mut section = resolved_app(app, &name)?;
        merge_env(&mut section.environment, &request.inherited_env, false);
        merge_env(&mut section.environment, &request.env_file, true);
        merge_env(&mut section.environment, &request.set_env, true);
        merge_env(&mut section.environment, &app.overrides.environment, true);

        let mut mounts = app.overrides.mounts.clone();
        for global in &request.global_mounts {
            if !mounts.iter().any(|m| m.path == global.path) {
                mounts.push(global.clone());
            }
        }
        satisfy_mount_points(&name, &section, &mut mounts, &mut volumes, &mut warnings);

        apps.push(PodApp {
            name,
            image: ImageRef {
                name: Some(app.image.name.clone()),
                id: app.image_id.clone(),
                labels: app.image.labels.clone(),
            },
            app: Some(section),
            read_only_root_fs: app.overrides.readonly_rootfs,
            mounts,
            annotations: app.overrides.annotations.clone(),
        });
    }
    check_ports(&request.ports, &apps)?;
    let manifest = PodManifest {
        ac_version: AcVersion::try_from(APPC_SPEC_VERSION.to_string())
            .map_err(PodError::Invalid)?,
        ac_kind: POD_MANIFEST_KIND.to_string(),
        apps,
        volumes,
        isolators: Vec::new(),
        annotations: vec![Annotation {
            name: identifier(MUTABLE_ANNOTATION)?,
            value: "false".to_string(),
        }],
        ports: request.ports.clone(),
        user_annotations: BTreeMap::new(),
        user_labels: BTreeMap::new(),
    };
    // The same validation any pod manifest gets: a mount of an unknown
    // volume, a relative path, a bad isolator all stop here, named.
    manifest
        .validate()
        .map_err(|err| PodError::Invalid(format!("the pod would be invalid: {err}")))?;
    Ok(BuiltManifest { manifest, warnings })
}

/// The image's app section with the per-app flags applied (rkt's
/// `generateRuntimeApp`).
fn resolved_app(app: &AppRequest, name: &AcName) -> Result<App, PodError> {
    let overrides = &app.overrides;
    let mut section = match (&app.image.app, &overrides.exec) {
        (Some(section), _) => section.clone(),
        (None, Some(_)) => App {
            exec: Vec::new(),
            user: "0".to_string(),
            group: "0".to_string(),
            supplementary_gids: Vec::new(),
            event_handlers: Vec::new(),
            working_directory: None,
            environment: Vec::new(),
            isolators: Vec::new(),
            mount_points: Vec::new(),
            ports: Vec::new(),
            user_annotations: BTreeMap::new(),
            user_labels: BTreeMap::new(),
        },
        (None, None) => {
            return Err(PodError::Invalid(format!(
                "image {} (app {name}) has no app section: say what to run with --exec",
                app.image.name
            )))
        }
    };
    if let Some(exec) = &overrides.exec {
        section.exec = vec![exec.clone()];
    }
    section.exec.extend(overrides.args.iter().cloned());
    if section.exec.is_empty() {
        return Err(PodError::Invalid(format!(
            "app {name} has nothing to run (its image has no exec): give --exec"
        )));
    }
    if let Some(user) = &overrides.user {
        section.user = user.clone();
    }
    if let Some(group) = &overrides.group {
        section.group = group.clone();
    }
    if let Some(gids) = &overrides.supplementary_gids {
        section.supplementary_gids = gids.clone();
    }
    if let Some(dir) = &overrides.working_dir {
        section.working_directory = Some(dir.clone());
    }
    for isolator in &overrides.isolators {
        section.isolators.retain(|i| i.name != isolator.name);
        section.isolators.push(isolator.clone());
    }
    section
        .user_annotations
        .extend(overrides.user_annotations.clone());
    section.user_labels.extend(overrides.user_labels.clone());
    Ok(section)
}

/// Sets each of `vars` in `env`; an existing name keeps its value unless
/// `override_existing`.
fn merge_env(env: &mut Vec<NameValue>, vars: &[NameValue], override_existing: bool) {
    for var in vars {
        match env.iter_mut().find(|existing| existing.name == var.name) {
            Some(existing) if override_existing => existing.value = var.value.clone(),
            Some(_) => {}
            None => env.push(var.clone()),
        }
    }
}

/// Every mount point of the image gets a mount: the volume of the same name
/// if the pod has one, else (as rkt's stage1 did) a new `empty` volume,
/// with a warning.
fn satisfy_mount_points(
    app: &AcName,
    section: &App,
    mounts: &mut Vec<Mount>,
    volumes: &mut Vec<Volume>,
    warnings: &mut Vec<String>,
) {
    for point in &section.mount_points {
        if mounts.iter().any(|m| m.path == point.path) {
            continue;
        }
        if !volumes.iter().any(|v| v.name == point.name) {
            warnings.push(format!(
                "no volume for mount point {} ({}) of app {app}: using a new empty volume, \
                 removed with the pod",
                point.name, point.path
            ));
            volumes.push(Volume {
                name: point.name.clone(),
                kind: VolumeKind::Empty,
                source: None,
                read_only: Some(point.read_only),
                recursive: None,
                mode: Some("0755".to_string()),
                uid: Some(0),
                gid: Some(0),
            });
        }
        mounts.push(Mount {
            volume: point.name.clone(),
            path: point.path.clone(),
            app_volume: None,
        });
    }
}

/// Every `--port` names a port some app declares, and no host port is
/// forwarded twice (rkt's `ForwardedPorts` rules).
fn check_ports(ports: &[PodPort], apps: &[PodApp]) -> Result<(), PodError> {
    for (index, port) in ports.iter().enumerate() {
        let declared = apps.iter().any(|app| {
            app.app
                .as_ref()
                .is_some_and(|section| section.ports.iter().any(|p| p.name == port.name))
        });
        if !declared {
            return Err(PodError::Invalid(format!(
                "--port {}: no app declares a port named {}; see the image's ports \
                 (`rkt image cat-manifest`)",
                port.name, port.name
            )));
        }
        let clash = ports[..index]
            .iter()
            .any(|other| other.host_port == port.host_port && other.host_ip == port.host_ip);
        if clash {
            return Err(PodError::Invalid(format!(
                "--port {}: host port {} is forwarded twice",
                port.name, port.host_port
            )));
        }
    }
    Ok(())
}

/// rkt's default app name: the image name's last path component, made into
/// an AC name (lowercase letters, digits and single dashes).
pub fn app_name_from_image(image: &AcIdentifier) -> Result<AcName, PodError> {
    app_name_from(image.as_str())
}

/// The last path component of `name` (an image name, or a Docker
/// repository: `nginx` for `docker.io/library/nginx`, as rkt's docker2aci
/// names ended), made into an AC name: lowercase letters, digits and single
/// dashes, so it is safe as the app's directory name in the pod.
pub fn app_name_from(image: &str) -> Result<AcName, PodError> {
    let last = image.rsplit('/').next().unwrap_or_default();
    let mut name = String::new();
    for c in last.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_end_matches('-');
    AcName::try_from(name).map_err(|_| {
        PodError::Invalid(format!(
            "cannot make an app name from image name {image}; give one with --name"
        ))
    })
}

fn identifier(text: &str) -> Result<AcIdentifier, PodError> {
    AcIdentifier::try_from(text).map_err(PodError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, app: serde_json::Value) -> ImageManifest {
        let mut json = serde_json::json!({
            "acKind": "ImageManifest", "acVersion": "0.8.11", "name": name,
            "labels": [{"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}],
        });
        if !app.is_null() {
            json["app"] = app;
        }
        ImageManifest::from_json(&serde_json::to_vec(&json).unwrap()).unwrap()
    }

    fn request(name: &str, app: serde_json::Value, overrides: AppOverrides) -> AppRequest {
        AppRequest {
            image_id: ImageId::try_from(format!("sha512-{}", "a".repeat(128))).unwrap(),
            image: image(name, app),
            overrides,
            default_name: None,
        }
    }

    fn nv(name: &str, value: &str) -> NameValue {
        NameValue {
            name: name.to_string(),
            value: value.to_string(),
        }
    }

    fn env_of(app: &PodApp) -> Vec<(String, String)> {
        let section = app.app.as_ref().unwrap();
        section
            .environment
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect()
    }

    #[test]
    fn overrides_replace_the_image_app_and_args_are_appended() {
        let overrides = AppOverrides {
            exec: Some("/bin/echo".into()),
            args: vec!["hello".into(), "world".into()],
            user: Some("nobody".into()),
            group: Some("100".into()),
            supplementary_gids: Some(vec![5, 6]),
            working_dir: Some("/tmp".into()),
            readonly_rootfs: true,
            isolators: vec![Isolator {
                name: AcIdentifier::try_from("resource/memory").unwrap(),
                value: serde_json::json!({"limit": "64M", "request": "64M"}),
            }],
            ..AppOverrides::default()
        };
        let app = serde_json::json!({
            "exec": ["/bin/sh", "-c", "true"], "user": "0", "group": "0",
            "isolators": [{"name": "resource/memory", "value": {"limit": "1G"}}]
        });
        let built = build(&PodRequest {
            apps: vec![request("example.com/my_web.app", app, overrides)],
            ..PodRequest::default()
        })
        .unwrap();
        let pod_app = &built.manifest.apps[0];
        assert_eq!(pod_app.name.as_str(), "my-web-app");
        assert!(pod_app.read_only_root_fs);
        let section = pod_app.app.as_ref().unwrap();
        assert_eq!(section.exec, ["/bin/echo", "hello", "world"]);
        assert_eq!(section.user, "nobody");
        assert_eq!(section.group, "100");
        assert_eq!(section.supplementary_gids, [5, 6]);
        assert_eq!(section.working_directory.as_deref(), Some("/tmp"));
        assert_eq!(section.isolators.len(), 1);
        assert_eq!(section.isolators[0].value["limit"], "64M");
        assert_eq!(
            built.manifest.annotations[0].name.as_str(),
            MUTABLE_ANNOTATION
        );
        // Args without --exec append to the image's exec line.
        let built = build(&PodRequest {
            apps: vec![request(
                "example.com/sh",
                serde_json::json!({"exec": ["/bin/sh"], "user": "0", "group": "0"}),
                AppOverrides {
                    args: vec!["-c".into(), "exit 3".into()],
                    ..AppOverrides::default()
                },
            )],
            ..PodRequest::default()
        })
        .unwrap();
        assert_eq!(
            built.manifest.apps[0].app.as_ref().unwrap().exec,
            ["/bin/sh", "-c", "exit 3"]
        );
    }

    #[test]
    fn environment_precedence_is_rkts() {
        let app = serde_json::json!({
            "exec": ["/bin/sh"], "user": "0", "group": "0",
            "environment": [{"name": "IMAGE", "value": "image"}, {"name": "ALL", "value": "image"}]
        });
        let overrides = AppOverrides {
            environment: vec![nv("ALL", "environment")],
            ..AppOverrides::default()
        };
        let built = build(&PodRequest {
            apps: vec![request("example.com/a", app, overrides)],
            inherited_env: vec![
                nv("IMAGE", "parent"),
                nv("PARENT", "parent"),
                nv("ALL", "parent"),
            ],
            env_file: vec![nv("FILE", "file"), nv("ALL", "file")],
            set_env: vec![nv("SET", "set"), nv("FILE", "set"), nv("ALL", "set")],
            ..PodRequest::default()
        })
        .unwrap();
        let env: BTreeMap<_, _> = env_of(&built.manifest.apps[0]).into_iter().collect();
        assert_eq!(env["IMAGE"], "image"); // the parent never overrides the image
        assert_eq!(env["PARENT"], "parent");
        assert_eq!(env["FILE"], "set");
        assert_eq!(env["SET"], "set");
        assert_eq!(env["ALL"], "environment");
    }

    #[test]
    fn names_must_be_unique_and_apps_need_something_to_run() {
        let sh = serde_json::json!({"exec": ["/bin/sh"], "user": "0", "group": "0"});
        let twice = build(&PodRequest {
            apps: vec![
                request("example.com/a", sh.clone(), AppOverrides::default()),
                request("other.org/a", sh.clone(), AppOverrides::default()),
            ],
            ..PodRequest::default()
        });
        assert!(twice.unwrap_err().to_string().contains("--name"));

        let bare = build(&PodRequest {
            apps: vec![request(
                "example.com/bare",
                serde_json::Value::Null,
                AppOverrides::default(),
            )],
            ..PodRequest::default()
        });
        assert!(bare.unwrap_err().to_string().contains("--exec"));
        let bare_with_exec = build(&PodRequest {
            apps: vec![request(
                "example.com/bare",
                serde_json::Value::Null,
                AppOverrides {
                    exec: Some("/bin/true".into()),
                    ..AppOverrides::default()
                },
            )],
            ..PodRequest::default()
        })
        .unwrap();
        let section = bare_with_exec.manifest.apps[0].app.as_ref().unwrap();
        assert_eq!((section.user.as_str(), section.group.as_str()), ("0", "0"));
    }

    #[test]
    fn mounts_need_volumes_and_mount_points_get_one() {
        let app = serde_json::json!({
            "exec": ["/bin/sh"], "user": "0", "group": "0",
            "mountPoints": [{"name": "data", "path": "/data"}, {"name": "cache", "path": "/cache"}]
        });
        let host = Volume {
            name: AcName::try_from("data").unwrap(),
            kind: VolumeKind::Host,
            source: Some("/srv".into()),
            read_only: Some(true),
            recursive: None,
            mode: None,
            uid: None,
            gid: None,
        };
        let built = build(&PodRequest {
            apps: vec![request(
                "example.com/a",
                app.clone(),
                AppOverrides::default(),
            )],
            volumes: vec![host],
            ..PodRequest::default()
        })
        .unwrap();
        let manifest = &built.manifest;
        assert_eq!(manifest.apps[0].mounts.len(), 2);
        assert_eq!(manifest.volumes.len(), 2);
        assert_eq!(manifest.volumes[1].kind, VolumeKind::Empty);
        assert_eq!(built.warnings.len(), 1);
        assert!(built.warnings[0].contains("cache"));

        let unknown = build(&PodRequest {
            apps: vec![request(
                "example.com/a",
                app,
                AppOverrides {
                    mounts: vec![Mount {
                        volume: AcName::try_from("nope").unwrap(),
                        path: "/x".into(),
                        app_volume: None,
                    }],
                    ..AppOverrides::default()
                },
            )],
            ..PodRequest::default()
        });
        assert!(unknown.unwrap_err().to_string().contains("nope"));
    }

    #[test]
    fn forwarded_ports_must_be_declared_and_distinct() {
        let app = serde_json::json!({
            "exec": ["/bin/sh"], "user": "0", "group": "0",
            "ports": [{"name": "http", "protocol": "tcp", "port": 80}]
        });
        let port = |name: &str, host_port: u16| PodPort {
            name: AcName::try_from(name).unwrap(),
            host_port,
            host_ip: None,
            pod_port: None,
        };
        let with_ports = |ports: Vec<PodPort>| {
            build(&PodRequest {
                apps: vec![request(
                    "example.com/web",
                    app.clone(),
                    AppOverrides::default(),
                )],
                ports,
                ..PodRequest::default()
            })
        };
        assert_eq!(
            with_ports(vec![port("http", 8080)]).unwrap().manifest.ports[0].host_port,
            8080
        );
        let unknown = with_ports(vec![port("https", 8443)]).unwrap_err();
        assert!(unknown.to_string().contains("no app declares"), "{unknown}");
        let twice = with_ports(vec![port("http", 8080), port("http", 8080)]).unwrap_err();
        assert!(twice.to_string().contains("twice"), "{twice}");
    }

    #[test]
    fn app_names_from_image_names() {
        let name = |n: &str| app_name_from_image(&AcIdentifier::try_from(n).unwrap());
        assert_eq!(name("example.com/busybox").unwrap().as_str(), "busybox");
        assert_eq!(name("coreos.com/etcd_v2.0").unwrap().as_str(), "etcd-v2-0");
        assert!(name("example.com/_-_9").is_ok());
    }
}
