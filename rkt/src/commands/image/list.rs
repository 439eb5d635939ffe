//! `rkt image list`.

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::commands::format::{ago, human_size, rfc3339};
use crate::error::RktError;
use crate::globals::GlobalOptions;
use crate::store::{unix_now, ImageFormat, ImageRecord, LockMode, Store};
use crate::terminal::{escape, escape_json};

#[derive(Args)]
pub struct ListArgs {
    /// Columns to show, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "id,name,size,importtime,lastused"
    )]
    fields: Vec<Field>,
    /// Do not print the header line.
    #[arg(long)]
    no_legend: bool,
    /// Full image IDs, exact sizes and absolute times.
    #[arg(long)]
    full: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "tabbed")]
    format: Format,
    /// Sort by these columns, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "importtime")]
    sort: Vec<Field>,
    /// Sort order.
    #[arg(long, value_enum, default_value = "asc")]
    order: Order,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Order {
    Asc,
    Desc,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Field {
    Id,
    Name,
    Size,
    Importtime,
    Lastused,
    Latest,
}

impl Field {
    fn legend(self) -> &'static str {
        match self {
            Field::Id => "ID",
            Field::Name => "NAME",
            Field::Size => "SIZE",
            Field::Importtime => "IMPORT TIME",
            Field::Lastused => "LAST USED",
            Field::Latest => "LATEST",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Tabbed,
    Json,
    JsonPretty,
}

/// One image in `--format=json`: IDs in full, times in RFC 3339, size in bytes.
#[derive(Serialize)]
struct JsonImage {
    id: String,
    /// What the NAME column shows.
    name: String,
    /// A Docker/OCI image's names, oldest first (empty for an ACI; not in
    /// rkt's output, an addition).
    names: Vec<String>,
    import_time: String,
    last_used: String,
    size: u64,
    latest: bool,
    /// Where it was fetched from (not in rkt's output; an addition).
    source: String,
}

/// `name:version` as rkt shows an ACI; a Docker/OCI image's names, comma
/// separated (`<none>` once the last one moved to another image, as Docker
/// shows it).
fn display_name(image: &ImageRecord, names: &[String]) -> String {
    match image.format {
        ImageFormat::Oci if names.is_empty() => "<none>".to_string(),
        ImageFormat::Oci => names.join(","),
        ImageFormat::Aci => match image.labels().get("version") {
            Some(version) => format!("{}:{version}", image.manifest.name),
            None => image.manifest.name.to_string(),
        },
    }
}

pub fn run(globals: &GlobalOptions, args: ListArgs) -> Result<(), RktError> {
    let store = Store::open(&globals.dir, LockMode::Shared)?;
    let mut images = store.images()?;
    let all_names = store.all_names()?;
    let names_of = |image: &ImageRecord| -> &[String] {
        all_names
            .get(image.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let latest: Vec<bool> = images
        .iter()
        .map(|image| {
            !images.iter().any(|other| {
                other.manifest.name == image.manifest.name
                    && (other.import_time, other.id.as_str())
                        > (image.import_time, image.id.as_str())
            })
        })
        .collect();
    let mut rows: Vec<(ImageRecord, bool)> = images.drain(..).zip(latest).collect();
    rows.sort_by(|(a, a_latest), (b, b_latest)| {
        let ordering = args
            .sort
            .iter()
            .map(|field| match field {
                Field::Id => a.id.cmp(&b.id),
                Field::Name => display_name(a, names_of(a)).cmp(&display_name(b, names_of(b))),
                Field::Size => a.size.cmp(&b.size),
                Field::Importtime => a.import_time.cmp(&b.import_time),
                Field::Lastused => a.last_used.cmp(&b.last_used),
                Field::Latest => a_latest.cmp(b_latest),
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal);
        match args.order {
            Order::Asc => ordering,
            Order::Desc => ordering.reverse(),
        }
    });
    if args.format != Format::Tabbed {
        let json_rows: Vec<JsonImage> = rows
            .iter()
            .map(|(image, latest)| JsonImage {
                id: image.id.to_string(),
                name: display_name(image, names_of(image)),
                names: names_of(image).to_vec(),
                import_time: rfc3339(image.import_time),
                last_used: rfc3339(image.last_used),
                size: image.size,
                latest: *latest,
                source: image.source.clone(),
            })
            .collect();
        let json = if args.format == Format::JsonPretty {
            serde_json::to_string_pretty(&json_rows)
        } else {
            serde_json::to_string(&json_rows)
        };
        println!("{}", escape_json(&json.unwrap_or_default()));
        return Ok(());
    }

    let now = unix_now();
    let mut table: Vec<Vec<String>> = Vec::new();
    if !args.no_legend {
        table.push(args.fields.iter().map(|f| f.legend().to_string()).collect());
    }
    for (image, latest) in &rows {
        table.push(
            args.fields
                .iter()
                .map(|field| match field {
                    Field::Id if args.full => image.id.to_string(),
                    Field::Id => image.id.short().to_string(),
                    // The version label is free text from the image, and a
                    // transport name holds the user's path.
                    Field::Name => escape(&display_name(image, names_of(image))).into_owned(),
                    Field::Size if args.full => image.size.to_string(),
                    Field::Size => human_size(image.size),
                    Field::Importtime if args.full => rfc3339(image.import_time),
                    Field::Importtime => ago(image.import_time, now),
                    Field::Lastused if args.full => rfc3339(image.last_used),
                    Field::Lastused => ago(image.last_used, now),
                    Field::Latest => latest.to_string(),
                })
                .collect(),
        );
    }
    print!("{}", align(&table));
    Ok(())
}

/// Left-aligns columns with two spaces between them (like Go's tabwriter).
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let rows = vec![
            vec!["ID".to_string(), "NAME".to_string()],
            vec!["sha512-abc".to_string(), "x".to_string()],
        ];
        assert_eq!(align(&rows), "ID          NAME\nsha512-abc  x\n");
    }
}
