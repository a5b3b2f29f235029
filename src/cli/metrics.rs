//! `gitmirror metrics`: the gauges the daemon's metrics endpoint serves, read from this
//! server's durable state and printed once (OpenMetrics text, which node_exporter's textfile
//! collector reads). The daemon's own counters (pushes, failures, durations, bytes sent,
//! peer connections) live in its memory and are not printed: scrape `[metrics] listen`.

use super::{Config, Outcome, print};
use crate::home::Home;
use crate::metrics::collect::snapshot;
use crate::metrics::registry::render;

pub(super) fn run(home: &Home, config: Config) -> Outcome {
    let config = config.map_err(|e| e.to_string())?;
    let text = render(&snapshot(home, &config.hostname), None).map_err(|e| e.to_string())?;
    print(&text)
}
