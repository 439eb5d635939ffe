//! `rkt config [--pretty-print=BOOL]`: the stage0 configuration in effect, merged from the
//! system (`--system-config`), local (`--local-config`) and user (`--user-config`)
//! directories, as rkt printed it: `{"stage0": [...]}` with one `auth` entry per domain, one
//! `dockerAuth` entry per registry (credentials included, as rkt showed them: this is the
//! administrator's view), then `paths` and `stage1` with the values rkt uses.

use clap::Args;

use super::stage1_image::{Stage1Defaults, KVM_STAGE1_NAME};
use crate::config::{printed, Effective};
use crate::error::RktError;
use crate::fetch::auth::AuthConfigs;
use crate::globals::GlobalOptions;

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Indent the JSON (`--pretty-print=false`: one line).
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pretty_print: bool,
}

pub fn run(globals: &GlobalOptions, args: ConfigArgs) -> Result<(), RktError> {
    let text = render(globals, args.pretty_print)?;
    println!("{text}");
    Ok(())
}

fn render(globals: &GlobalOptions, pretty: bool) -> Result<String, RktError> {
    let auth = AuthConfigs::load_from(&globals.config_dirs())?;
    let stage1 = Stage1Defaults::load(globals)?;
    let (name, version) = stage1.name.clone().unwrap_or_else(|| {
        (
            KVM_STAGE1_NAME.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        )
    });
    let printed = printed(&Effective {
        auth: &auth,
        data_dir: &globals.dir,
        stage1_images: &stage1.images_dir,
        stage1_name: &name,
        stage1_version: &version,
        stage1_location: &stage1.location,
    });
    let text = if pretty {
        // rkt indented with tabs.
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
        serde::Serialize::serialize(&printed, &mut serializer)
            .map_err(|err| RktError::Message(format!("printing the configuration: {err}")))?;
        String::from_utf8_lossy(&out).into_owned()
    } else {
        serde_json::to_string(&printed)
            .map_err(|err| RktError::Message(format!("printing the configuration: {err}")))?
    };
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::globals::InsecureOptions;
    use std::fs;
    use std::path::PathBuf;

    #[test]
    fn prints_the_merged_configuration_with_tabs() {
        let system = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        let user = tempfile::tempdir().unwrap();
        fs::create_dir_all(local.path().join("paths.d")).unwrap();
        fs::write(
            local.path().join("paths.d/p.json"),
            r#"{"rktKind":"paths","rktVersion":"v1","stage1-images":"/opt/stage1s"}"#,
        )
        .unwrap();
        fs::create_dir_all(user.path().join("auth.d")).unwrap();
        fs::write(
            user.path().join("auth.d/a.json"),
            r#"{"rktKind":"dockerAuth","rktVersion":"v1","registries":["r.example"],
                "credentials":{"user":"me","password":"pw"}}"#,
        )
        .unwrap();
        let globals = GlobalOptions {
            dir: PathBuf::from("/data"),
            local_config: local.path().to_path_buf(),
            system_config: system.path().to_path_buf(),
            user_config: Some(user.path().to_path_buf()),
            insecure: InsecureOptions::default(),
            debug: false,
        };
        let pretty = render(&globals, true).unwrap();
        assert!(
            pretty.starts_with("{\n\t\"stage0\": [\n\t\t{\n"),
            "{pretty}"
        );
        let value: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        let entries = value["stage0"].as_array().unwrap();
        assert_eq!(entries.len(), 3, "{pretty}");
        assert_eq!(entries[0]["rktKind"], "dockerAuth");
        assert_eq!(entries[0]["credentials"]["password"], "pw");
        assert_eq!(entries[1]["data"], "/data");
        assert_eq!(entries[1]["stage1-images"], "/opt/stage1s");
        assert_eq!(entries[2]["name"], KVM_STAGE1_NAME);
        assert_eq!(entries[2]["location"], "/opt/stage1s/stage1-kvm.aci");
        let flat = render(&globals, false).unwrap();
        assert!(!flat.contains('\n'));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&flat).unwrap(),
            value
        );
    }
}
