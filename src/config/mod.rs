//! Configuration as the administrator writes it: both files read and validated whole, every
//! mistake reported as `file:line: what is wrong`.
//!
//! - [`file`]: reading TOML with line-located errors ([`ConfigError`]).
//! - [`server`]: `gitmirror.toml`, this server's own settings.
//! - [`rules`]: `repos.toml`, access rules and mirror settings per repo.

pub(crate) mod file;
pub(crate) mod rules;
pub(crate) mod server;

pub(crate) use file::{ConfigError, Source};
pub(crate) use rules::{Access, MirrorRule, Rules};
pub(crate) use server::{LogConfig, MirrorConfig, ServerConfig};
