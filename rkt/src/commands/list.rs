//! `rkt list [--full] [--no-legend] [--format=json|json-pretty]`: one line
//! per app of every pod (UUID, APP, IMAGE NAME, [IMAGE ID,] STATE, CREATED,
//! STARTED, NETWORKS), pod columns only on a pod's first line, as rkt
//! printed them.

use clap::Args;

use super::format::{ago, rkt_time};
use super::pod_json::{pod_json, print_json, OutputFormat};
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::pod::info::{now_nanos, NetInfo};
use crate::pod::{Pod, PodsDir, StateDir};

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print full UUIDs and image IDs and absolute times.
    #[arg(long)]
    full: bool,
    /// Leave out the header line.
    #[arg(long)]
    no_legend: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "tabbed")]
    format: OutputFormat,
}

/// rkt's `list` skips embryos and garbage that never ran.
const LISTED: [StateDir; 4] = [
    StateDir::Prepare,
    StateDir::Prepared,
    StateDir::Run,
    StateDir::ExitedGarbage,
];

/// rkt prints image IDs cut to 19 characters (`sha512-` and 12 hex).
const IMAGE_ID_CHARS: usize = 19;
/// Short UUIDs: the first 8 characters.
const SHORT_UUID_CHARS: usize = 8;

pub fn run(globals: &GlobalOptions, args: ListArgs) -> Result<(), RktError> {
    let pods = PodsDir::open(&globals.dir)?;
    let all = Pod::load_all(&pods, &LISTED)?;
    let mut problems = Vec::new();
    if args.format != OutputFormat::Tabbed {
        let mut listed = Vec::new();
        for pod in &all {
            match pod_json(pod) {
                Ok(json) => listed.push(json),
                Err(err) => problems.push(format!("pod {}: {err}", pod.uuid)),
            }
        }
        print_json(&listed, args.format)?;
    } else {
        let mut rows: Vec<Vec<String>> = Vec::new();
        if !args.no_legend {
            let mut header = vec!["UUID", "APP", "IMAGE NAME"];
            if args.full {
                header.push("IMAGE ID");
            }
            header.extend(["STATE", "CREATED", "STARTED", "NETWORKS"]);
            rows.push(header.into_iter().map(String::from).collect());
        }
        let now = now_nanos();
        for pod in &all {
            match pod_rows(pod, args.full, now) {
                Ok(mut lines) => rows.append(&mut lines),
                Err(err) => problems.push(format!("pod {}: {err}", pod.uuid)),
            }
        }
        print_table(&rows);
    }
    for problem in &problems {
        eprintln!("rkt: listing pods: {problem}");
    }
    Ok(())
}

fn pod_rows(pod: &Pod, full: bool, now: i64) -> Result<Vec<Vec<String>>, RktError> {
    let time = |nanos: Option<i64>| match nanos {
        None => String::new(),
        Some(t) if full => rkt_time(t),
        Some(t) => ago(t.div_euclid(1_000_000_000), now.div_euclid(1_000_000_000)),
    };
    let uuid = if full {
        pod.uuid.to_string()
    } else {
        pod.uuid.as_str()[..SHORT_UUID_CHARS].to_string()
    };
    let networks = pod
        .networks()
        .iter()
        .map(NetInfo::describe)
        .collect::<Vec<_>>()
        .join(", ");
    let mut pod_columns = Some([
        uuid,
        pod.state().as_str().to_string(),
        time(pod.created()?),
        time(pod.started()?),
        networks,
    ]);
    let manifest = pod.manifest()?;
    let apps = manifest.map(|m| m.apps).unwrap_or_default();
    let mut rows = Vec::new();
    let row = |columns: Option<[String; 5]>, app: String, image: String, id: String| {
        let [uuid, state, created, started, networks] = columns.unwrap_or_default();
        let mut row = vec![uuid, app, image];
        if full {
            row.push(id);
        }
        row.extend([state, created, started, networks]);
        row
    };
    if apps.is_empty() {
        rows.push(row(pod_columns.take(), "-".into(), "-".into(), "-".into()));
    }
    for app in apps {
        let image = match pod.app_image_manifest(app.name.as_str()) {
            Ok(manifest) => match manifest.labels.get("version") {
                // The version label is free text from the image.
                Some(version) => format!("{}:{}", manifest.name, crate::terminal::escape(version)),
                None => manifest.name.to_string(),
            },
            Err(_) => "--".to_string(),
        };
        let id: String = app.image.id.as_str().chars().take(IMAGE_ID_CHARS).collect();
        rows.push(row(pod_columns.take(), app.name.to_string(), image, id));
    }
    Ok(rows)
}

/// Tab-aligned columns, as rkt's Go tabwriter printed them (tab width 8,
/// padding 1, tabs as padding): each column starts at the first tab stop
/// past its widest cell.
pub fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            widths[index] = widths[index].max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if index + 1 < row.len() {
                // Pad to the next tab stop past the column's widest cell.
                let stop = (widths[index] / 8 + 1) * 8;
                let tabs = (stop - cell.chars().count()).div_ceil(8);
                line.push_str(&"\t".repeat(tabs.max(1)));
            }
        }
        println!("{}", line.trim_end());
    }
}
