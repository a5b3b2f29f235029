//! `gitmirror daemon`: runs the replicator until SIGTERM or SIGINT.

use std::sync::Arc;

use super::{Config, Outcome};
use crate::daemon::server;
use crate::home::Home;

pub(super) fn run(home: &Home, config: Config) -> Outcome {
    let config = config.map_err(|e| e.to_string())?;
    server::run(home, Arc::new(config)).map_err(|e| e.to_string())
}
