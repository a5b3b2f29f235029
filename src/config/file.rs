//! Reading TOML configuration files with errors an administrator can act on: every problem,
//! whether TOML syntax or a meaning our code checks, is reported as `file:line: what is wrong`.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use thiserror::Error;

/// A mistake in a configuration file, located by file and line.
#[derive(Debug, Error)]
pub(crate) enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file was read, but something in it is wrong.
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

/// One configuration file's text, kept so that later checks can point at a line.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    /// Reads the file.
    pub(crate) fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Ok(Source {
            path: path.to_path_buf(),
            text,
        })
    }

    /// Wraps text that did not come from disk (a file in a pushed commit, say); `path` is how
    /// errors name it.
    pub(crate) fn from_text(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Source {
            path: path.into(),
            text: text.into(),
        }
    }

    /// Deserializes the whole file; TOML and serde errors come back with their line.
    pub(crate) fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            let line = e.span().map_or(1, |s| self.line_of(s.start));
            // The first line of toml's message is the summary; the rest is a source excerpt.
            let message = e.message().lines().next().unwrap_or("invalid TOML").trim();
            self.error_at_line(line, message)
        })
    }

    /// An error pointing at the line that holds `span` (from a `toml::Spanned` value).
    pub(crate) fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        self.error_at_line(self.line_of(span.start), message)
    }

    /// An error pointing at the first line that sets `key` (`key = ...`), or line 1.
    pub(crate) fn error_at_key(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let line = self
            .text
            .lines()
            .position(|l| {
                l.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
            .map_or(1, |i| i + 1);
        self.error_at_line(line, message)
    }

    fn error_at_line(&self, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.path.clone(),
            line,
            message: message.into(),
        }
    }

    /// The line (from 1) that holds byte `offset`.
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.line_of(offset)
    }

    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        1 + self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }
}
