//! The JSON shape of a pod in `rkt list --format=json` and `rkt status
//! --format=json`: rkt's `api/v1` `Pod` and `App` objects (field names,
//! nanosecond times for apps, omitted empty fields), so scripts written for
//! rkt read ours.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::RktError;
use crate::pod::info::NetInfo;
use crate::pod::{Pod, PodState};

#[derive(Debug, Serialize)]
pub struct PodJson {
    /// The UUID (rkt calls the field `name`).
    pub name: String,
    pub state: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub app_names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppJson>,
    /// Seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub user_annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub user_labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct AppJson {
    pub name: String,
    /// `unknown`, `created`, `running` or `exited`.
    pub state: &'static str,
    /// Nanoseconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub image_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountJson>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub user_annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub user_labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct MountJson {
    pub name: String,
    pub container_path: String,
    pub host_path: String,
    pub read_only: bool,
}

const NANOS: i64 = 1_000_000_000;

/// An app's state in an immutable pod follows the pod's (rkt's
/// `appStateFromPod`), refined by its status file.
fn app_state_from_pod(state: PodState) -> &'static str {
    match state {
        PodState::Embryo | PodState::Preparing | PodState::AbortedPrepare => "unknown",
        PodState::Prepared => "created",
        PodState::Running => "running",
        _ => "exited",
    }
}

pub fn pod_json(pod: &Pod) -> Result<PodJson, RktError> {
    let created = pod.created()?;
    let started = pod.started()?;
    let mut json = PodJson {
        name: pod.uuid.to_string(),
        state: pod.state().as_str().to_string(),
        networks: if pod.state() == PodState::Running {
            pod.networks()
        } else {
            Vec::new()
        },
        app_names: Vec::new(),
        apps: Vec::new(),
        created_at: created.map(|t| t.div_euclid(NANOS)),
        started_at: started.map(|t| t.div_euclid(NANOS)),
        user_annotations: BTreeMap::new(),
        user_labels: BTreeMap::new(),
    };
    let Some(manifest) = pod.manifest()? else {
        return Ok(json);
    };
    for app in &manifest.apps {
        let name = app.name.as_str();
        json.app_names.push(name.to_string());
        let exit_code = pod.app_exit_code(name)?;
        let section = app.app.as_ref();
        let mounts = app
            .mounts
            .iter()
            .map(|mount| {
                let volume = mount
                    .app_volume
                    .as_ref()
                    .or_else(|| manifest.volumes.iter().find(|v| v.name == mount.volume));
                MountJson {
                    name: mount.volume.to_string(),
                    container_path: mount.path.clone(),
                    host_path: volume.and_then(|v| v.source.clone()).unwrap_or_default(),
                    read_only: volume.and_then(|v| v.read_only).unwrap_or(false),
                }
            })
            .collect();
        json.apps.push(AppJson {
            name: name.to_string(),
            state: if exit_code.is_some() {
                "exited"
            } else {
                app_state_from_pod(pod.state())
            },
            created_at: created,
            started_at: started,
            finished_at: match pod.app_finished(name)? {
                Some(time) => Some(time),
                None => pod.gc_marked(),
            },
            exit_code,
            image_id: app.image.id.to_string(),
            mounts,
            user_annotations: section
                .map(|s| s.user_annotations.clone())
                .unwrap_or_default(),
            user_labels: section.map(|s| s.user_labels.clone()).unwrap_or_default(),
        });
    }
    json.user_annotations = manifest.user_annotations.clone();
    json.user_labels = manifest.user_labels.clone();
    Ok(json)
}

/// `--format`: rkt's `json` (one line) and `json-pretty` (tab-indented).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable (the default).
    Tabbed,
    Json,
    #[value(name = "json-pretty")]
    JsonPretty,
}

pub fn print_json<T: Serialize>(value: &T, format: OutputFormat) -> Result<(), RktError> {
    let text = match format {
        OutputFormat::JsonPretty => {
            let mut out = Vec::new();
            let mut serializer = serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(b"\t"),
            );
            value
                .serialize(&mut serializer)
                .map_err(|err| RktError::Message(format!("encoding JSON: {err}")))?;
            String::from_utf8_lossy(&out).into_owned()
        }
        _ => serde_json::to_string(value)
            .map_err(|err| RktError::Message(format!("encoding JSON: {err}")))?,
    };
    println!("{text}");
    Ok(())
}

/// The pods the command line names: the UUIDs, plus the one in `--uuid-file` (which is
/// required when no UUID is given).
pub fn named_pods(
    uuids: &[String],
    uuid_file: Option<&std::path::Path>,
) -> Result<Vec<String>, RktError> {
    let mut wanted = uuids.to_vec();
    if uuid_file.is_some() || wanted.is_empty() {
        wanted.push(pod_argument(None, uuid_file)?);
    }
    Ok(wanted)
}

/// Runs `act` on each named pod, printing `"UUID"` for each success and one `rkt: cannot VERB
/// pod X: ...` line for each failure; one failure does not stop the others (as `rkt rm` and
/// `rkt stop` did). `verb` and `done` word the messages: `remove` / `removed`.
pub fn for_each_named_pod(
    wanted: &[String],
    (verb, done): (&str, &str),
    mut act: impl FnMut(&str) -> Result<String, RktError>,
) -> Result<(), RktError> {
    let mut failures = 0;
    for text in wanted {
        match act(text) {
            Ok(uuid) => println!("\"{uuid}\""),
            Err(err) => {
                eprintln!("rkt: cannot {verb} pod {text}: {err}");
                failures += 1;
            }
        }
    }
    match failures {
        0 => Ok(()),
        count => Err(RktError::Message(format!(
            "{count} of {} pods were not {done}",
            wanted.len()
        ))),
    }
}

/// The pod named on the command line: a UUID (or unique prefix), or the
/// UUID read from `--uuid-file`.
pub fn pod_argument(
    uuid: Option<&str>,
    uuid_file: Option<&std::path::Path>,
) -> Result<String, RktError> {
    match (uuid, uuid_file) {
        (Some(_), Some(_)) => Err(RktError::Usage(
            "give either a UUID or --uuid-file, not both".to_string(),
        )),
        (Some(uuid), None) => Ok(uuid.to_string()),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map(|text| text.trim().to_string())
            .map_err(RktError::io(format!(
                "reading the pod UUID from {}",
                file.display()
            ))),
        (None, None) => Err(RktError::Usage(
            "give the pod's UUID (or --uuid-file=FILE); see `rkt list`".to_string(),
        )),
    }
}
