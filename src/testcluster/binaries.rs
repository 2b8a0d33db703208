//! Locating the PostgreSQL server binaries on this machine.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::ClusterError;

/// The directory holding one PostgreSQL installation's programs (`initdb`,
/// `pg_ctl`, `postgres`, `psql`, `pgbench`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    bin_dir: PathBuf,
}

impl PgBinaries {
    /// Finds a PostgreSQL installation, in this order:
    ///
    /// 1. `initdb` on `PATH` (symlinks resolved, so a `/usr/local/bin/initdb`
    ///    link into `/usr/lib/postgresql/15/bin` selects the latter);
    /// 2. `pg_config --bindir`, if that directory contains `initdb`;
    /// 3. the highest-version `/usr/lib/postgresql/*/bin` containing `initdb`.
    pub fn discover() -> Result<Self, ClusterError> {
        let mut tried = Vec::new();

        if let Some(dir) = from_path(&mut tried) {
            return Ok(Self::at(dir));
        }
        if let Some(dir) = from_pg_config(&mut tried) {
            return Ok(Self::at(dir));
        }
        if let Some(dir) = highest_versioned(Path::new("/usr/lib/postgresql"), &mut tried) {
            return Ok(Self::at(dir));
        }
        Err(ClusterError::BinariesNotFound {
            detail: tried.join("; "),
        })
    }

    /// Uses the installation in `bin_dir` without any checks.
    pub fn at(bin_dir: impl Into<PathBuf>) -> Self {
        Self {
            bin_dir: bin_dir.into(),
        }
    }

    /// The installation's `bin` directory.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The path of program `name`: `bin_dir/name` if it exists, else just
    /// `name` (looked up on `PATH` when run).
    pub fn program(&self, name: &str) -> PathBuf {
        let candidate = self.bin_dir.join(name);
        if is_executable(&candidate) {
            candidate
        } else {
            PathBuf::from(name)
        }
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Step 1: `initdb` on `PATH`.
fn from_path(tried: &mut Vec<String>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        let initdb = dir.join("initdb");
        if !is_executable(&initdb) {
            continue;
        }
        // Prefer the real installation directory when initdb is a symlink,
        // so pg_ctl/postgres/pg_basebackup of the same version are found.
        if let Some(real_dir) = fs::canonicalize(&initdb)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            && is_executable(&real_dir.join("pg_ctl"))
        {
            return Some(real_dir);
        }
        if is_executable(&dir.join("pg_ctl")) {
            return Some(dir);
        }
        tried.push(format!("{} has no pg_ctl next to it", initdb.display()));
    }
    tried.push("no initdb on PATH".to_owned());
    None
}

/// Step 2: `pg_config --bindir`.
fn from_pg_config(tried: &mut Vec<String>) -> Option<PathBuf> {
    let output = match Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            tried.push(format!("pg_config --bindir failed ({})", o.status));
            return None;
        }
        Err(e) => {
            tried.push(format!("pg_config not runnable ({e})"));
            return None;
        }
    };
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if is_executable(&dir.join("initdb")) {
        Some(dir)
    } else {
        tried.push(format!(
            "pg_config --bindir {} has no initdb",
            dir.display()
        ));
        None
    }
}

/// Step 3: highest `<root>/<version>/bin` that contains `initdb`.
fn highest_versioned(root: &Path, tried: &mut Vec<String>) -> Option<PathBuf> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) => {
            tried.push(format!("cannot list {} ({e})", root.display()));
            return None;
        }
    };
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(version) = parse_version(&name) else {
            continue;
        };
        let bin = entry.path().join("bin");
        if !is_executable(&bin.join("initdb")) {
            continue;
        }
        if best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    if best.is_none() {
        tried.push(format!("no {}/*/bin/initdb", root.display()));
    }
    best.map(|(_, dir)| dir)
}

/// `"15"` -> `[15]`, `"9.6"` -> `[9, 6]`; `None` for non-version names.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        assert!(parse_version("10") > parse_version("9.6"));
        assert_eq!(parse_version("15"), Some(vec![15]));
        assert_eq!(parse_version("common"), None);
    }

    #[test]
    fn picks_highest_version_with_initdb() {
        let root = tempfile::tempdir().unwrap();
        for (v, with_initdb) in [("9.6", true), ("16", false), ("15", true), ("x", true)] {
            let bin = root.path().join(v).join("bin");
            fs::create_dir_all(&bin).unwrap();
            if with_initdb {
                let p = bin.join("initdb");
                fs::write(&p, "#!/bin/sh\n").unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let mut tried = Vec::new();
        let dir = highest_versioned(root.path(), &mut tried).unwrap();
        assert_eq!(dir, root.path().join("15").join("bin"));
    }
}
