//! One error for a file of the run that could not be created, written or read: what was
//! tried, on which path, and the I/O error underneath.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot {what} {}", path.display())]
pub struct FileError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    /// For `map_err`: `std::fs::write(p, b).map_err(FileError::on("write", p))`.
    pub fn on(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| FileError { what, path, source }
    }
}
