//! `gitmirror hook pre-receive | post-receive`: run by the scripts in `hooks/` inside git's
//! receive-pack. Their stderr reaches the pusher as `remote:` lines.

use std::io;
use std::sync::Arc;

use super::{Config, HookCmd, Outcome};
use crate::home::Home;
use crate::serve::hook;

pub(super) fn run(home: &Home, config: Config, which: HookCmd) -> Outcome {
    let updates = hook::read_updates(io::stdin().lock()).map_err(|e| e.to_string())?;
    let pushed_by = hook::PushedBy::from_env();
    match which {
        HookCmd::PreReceive => {
            hook::pre_receive(home, &pushed_by, &updates).map_err(|e| e.to_string())
        }
        HookCmd::PostReceive => {
            let config = Arc::new(config.map_err(|e| e.to_string())?);
            // git shows a hook's stderr to the pusher as "remote:" lines.
            let lines = match hook::post_receive(home, config, &pushed_by, &updates) {
                Ok(lines) => lines,
                Err(hook::HookError::AfterLines { lines, error }) => {
                    for line in lines {
                        eprintln!("{line}");
                    }
                    return Err(error.to_string());
                }
                Err(e) => return Err(e.to_string()),
            };
            for line in lines {
                eprintln!("{line}");
            }
            Ok(())
        }
    }
}
