//! Configuration as the administrator writes it: both files read and validated whole, every
//! mistake reported as `file:line: what is wrong`.
//!
//! - [`file`]: reading TOML with line-located errors ([`ConfigError`]).
//! - [`server`]: `gitmirror.toml`, this server's own settings.
//! - [`rules`]: `repos.toml`, access rules and mirror settings per repo; `rules_index` is the
//!   compiled form the shells read one repo at a time.
//! - [`external`]: a repo's `upstream` (pull mirror) and `downstream`s (push mirrors).

pub(crate) mod external;
pub(crate) mod file;
pub(crate) mod rules;
mod rules_index;
pub(crate) mod server;

pub(crate) use file::{ConfigError, Source};
pub(crate) use rules::{Access, Ask, MirrorRule, RepoRoles, Rules};
pub(crate) use server::{LogConfig, MirrorConfig, ServerConfig};
