//! `logs/<UTC timestamp>-<label>/` and the `logs/latest` symlink.

use std::io;
use std::path::{Path, PathBuf};

/// One run's folder under the logs root.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
    path: PathBuf,
}

impl RunDir {
    /// Creates `<root>/<YYYYmmddTHHMMSSZ>-<label>` (with `-2`, `-3`, ... when two runs start in
    /// the same second) and points `<root>/latest` at it.
    pub fn create(root: &Path, label: &str) -> io::Result<RunDir> {
        std::fs::create_dir_all(root)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = format!("{stamp}-{label}");
        let mut n = 1;
        let path = loop {
            let name = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let candidate = root.join(name);
            match std::fs::create_dir(&candidate) {
                Ok(()) => break candidate,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(e),
            }
        };
        let dir = RunDir {
            root: root.to_owned(),
            path,
        };
        dir.point_latest()?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file inside the run's folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// `latest` -> this folder (relative, so the logs folder can be moved or uploaded as is),
    /// swapped in atomically with a rename.
    fn point_latest(&self) -> io::Result<()> {
        let target = self.path.file_name().expect("a run folder has a name");
        let temp = self.root.join(format!(".latest-{}", std::process::id()));
        let _ = std::fs::remove_file(&temp);
        std::os::unix::fs::symlink(target, &temp)?;
        std::fs::rename(&temp, self.root.join("latest"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_runs_in_one_second_get_two_folders_and_latest_follows() {
        let root = tempfile::tempdir().unwrap();
        let a = RunDir::create(root.path(), "redis").unwrap();
        let b = RunDir::create(root.path(), "redis").unwrap();
        assert_ne!(a.path(), b.path());
        let latest = std::fs::read_link(root.path().join("latest")).unwrap();
        assert_eq!(latest, b.path().file_name().unwrap());
        assert!(
            a.path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("Z-redis")
        );
    }
}
