//! What an administrator runs on a server: [`init`] (a new home), [`keys`] (users' and
//! peers' keys and the authorized_keys rendered from them) and [`compile`] (`repos.toml`
//! applied to the repositories), and [`store_ops`] (`delete`, `rename`, the trash, on a
//! repo's master and, through the daemon, its slaves), and [`user_repos`] (repos users
//! create where a pattern allows, and their `perms`, queued for the slaves the same way).

pub(crate) mod admin_repo;
pub(crate) mod compile;
pub(crate) mod import_gitolite;
pub(crate) mod init;
pub(crate) mod keys;
pub(crate) mod store_ops;
pub(crate) mod user_repos;
