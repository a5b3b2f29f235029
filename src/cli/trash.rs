//! `gitmirror trash list|restore|purge`: the deleted repos this server keeps in
//! `repositories/.trash/`, what of them slaves have yet to apply, and getting them back or rid
//! of them (on the master, on every slave too).

use std::time::Duration;

use super::{Config, Outcome, print};
use crate::admin::store_ops;
use crate::home::Home;
use crate::names::RepoName;
use crate::replicate::op_queue::OpQueue;
use crate::replicate::status::format_time;
use crate::repo::store_op::StoreOp;
use crate::repo::{Store, TrashEntry};

/// One line per entry: its name, when it was deleted, and slaves that have not trashed their
/// copy yet (with the last error).
pub(super) fn list(home: &Home, config: Config) -> Outcome {
    config.map_err(|e| e.to_string())?;
    let store = Store::new(home.repositories());
    let entries = store.trash_list().map_err(|e| e.to_string())?;
    let ops = OpQueue::new(home.ops_dir())
        .load_all()
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    for entry in &entries {
        let deleted = entry
            .time()
            .map(|t| {
                let secs = t
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                format_time(Some(secs))
            })
            .unwrap_or_default();
        out.push_str(&format!("{entry}\tdeleted {deleted}"));
        for record in &ops {
            if matches!(&record.op, StoreOp::Trash { entry: e, .. } if e == entry) {
                for (slave, p) in &record.slaves {
                    let why = p.last_error.as_deref().unwrap_or("not tried yet");
                    out.push_str(&format!("\tnot yet on {slave}: {why}"));
                }
            }
        }
        out.push('\n');
    }
    if entries.is_empty() {
        out.push_str("the trash is empty\n");
    }
    print(&out)
}

pub(super) fn restore(home: &Home, config: Config, entry: &str, as_name: Option<&str>) -> Outcome {
    let config = config.map_err(|e| e.to_string())?;
    let entry = TrashEntry::parse(entry).map_err(|e| e.to_string())?;
    let as_name = as_name
        .map(|n| RepoName::parse(n).map_err(|e| format!("bad repo name: {e}")))
        .transpose()?;
    let done =
        store_ops::restore(home, &config, &entry, as_name.as_ref()).map_err(|e| e.to_string())?;
    print(&format!("{}\n", done.line))
}

pub(super) fn purge(home: &Home, config: Config, older_than: &str) -> Outcome {
    let config = config.map_err(|e| e.to_string())?;
    let age: Duration = humantime::parse_duration(older_than)
        .map_err(|e| format!("--older-than {older_than:?}: {e} (expected e.g. 30d, 12h)"))?;
    let done = store_ops::purge(home, &config, age).map_err(|e| e.to_string())?;
    let mut out: String = done.iter().map(|d| format!("{}\n", d.line)).collect();
    out.push_str(&format!("purged {} trash entries\n", done.len()));
    print(&out)
}
