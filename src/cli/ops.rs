//! `gitmirror ops [--drop SEQ SLAVE]`: the deletes, renames, restores and purges this server
//! (as master) still owes its slaves, a line each with the slave's last answer; and, for an
//! operation a slave will never apply, giving up on it for that slave.

use super::{Config, Outcome, print};
use crate::home::Home;
use crate::replicate::op_queue::OpQueue;
use crate::replicate::status::age;

pub(super) fn list(home: &Home, config: Config) -> Outcome {
    config.map_err(|e| e.to_string())?;
    let ops = OpQueue::new(home.ops_dir())
        .load_all()
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    for r in &ops {
        for (slave, p) in &r.slaves {
            let why = p.last_error.as_deref().unwrap_or("not tried yet");
            out.push_str(&format!(
                "{}\t{slave}\t{}\tqueued {} ago\t{} attempts\t{why}\n",
                r.seq,
                r.op.describe(),
                age(r.created),
                p.attempts
            ));
        }
    }
    if out.is_empty() {
        out.push_str("no operations owed to any slave\n");
    }
    print(&out)
}

pub(super) fn drop(home: &Home, config: Config, seq: u64, slave: &str) -> Outcome {
    config.map_err(|e| e.to_string())?;
    let dropped = OpQueue::new(home.ops_dir())
        .drop_for(seq, slave)
        .map_err(|e| e.to_string())?;
    if !dropped {
        return Err(format!(
            "operation {seq} is not owed to {slave} (see gitmirror ops)"
        ));
    }
    print(&format!(
        "operation {seq} dropped for {slave}; it will not be sent there\n"
    ))
}
