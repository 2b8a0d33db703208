//! Running PostgreSQL programs as the right OS user, and process helpers.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::binaries::PgBinaries;
use super::error::{ClusterError, tail};

/// Shared, immutable context of one cluster: which binaries to run, as which
/// user, and in which scratch directory.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The PostgreSQL installation.
    pub(crate) bins: PgBinaries,
    /// `(uid, gid)` to run PostgreSQL programs as; `None` = current user.
    pub(crate) run_as: Option<(u32, u32)>,
    /// The cluster's scratch directory (cwd and `HOME` of child processes).
    pub(crate) base_dir: PathBuf,
}

impl Ctx {
    /// A [`Command`] for the PostgreSQL program `program`, set up to run as
    /// the cluster's OS user, with a clean `PG*` environment, `LC_ALL=C`,
    /// stdin from `/dev/null` and the scratch directory as cwd.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bins.program(program));
        cmd.current_dir(&self.base_dir)
            .stdin(Stdio::null())
            .env("LC_ALL", "C");
        for (key, _) in std::env::vars_os() {
            if key.as_encoded_bytes().starts_with(b"PG") {
                cmd.env_remove(key);
            }
        }
        if let Some((uid, gid)) = self.run_as {
            // The pg user cannot read root's home (and ~/.psqlrc, ~/.pgpass).
            cmd.uid(uid).gid(gid).env("HOME", &self.base_dir);
        }
        cmd
    }

    /// Makes `path` owned by the cluster's OS user (no-op when not root).
    pub(crate) fn chown(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| ClusterError::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Creates directory `path` (mode 0700) owned by the cluster's OS user.
    pub(crate) fn create_dir(&self, path: &Path) -> Result<(), ClusterError> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(|e| ClusterError::io(format!("create directory {}", path.display()), e))?;
        self.chown(path)
    }

    /// Writes (replacing) file `path` with `contents`, owned by the cluster's
    /// OS user.
    pub(crate) fn write_file(
        &self,
        path: &Path,
        contents: &str,
        mode: u32,
    ) -> Result<(), ClusterError> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(|e| ClusterError::io(format!("open {}", path.display()), e))?;
        file.write_all(contents.as_bytes())
            .map_err(|e| ClusterError::io(format!("write {}", path.display()), e))?;
        self.chown(path)
    }
}

/// Appends `contents` to the existing file `path` (keeps owner and mode).
pub(crate) fn append_file(path: &Path, contents: &str) -> Result<(), ClusterError> {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| ClusterError::io(format!("open {}", path.display()), e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| ClusterError::io(format!("append to {}", path.display()), e))
}

/// A printable command line for error messages (long arguments shortened).
pub(crate) fn describe(cmd: &Command) -> String {
    fn short(arg: &OsStr) -> String {
        let s = arg.to_string_lossy();
        if s.chars().count() > 200 {
            let cut: String = s.chars().take(200).collect();
            format!("{cut}...")
        } else {
            s.into_owned()
        }
    }
    let program = Path::new(cmd.get_program())
        .file_name()
        .map(short)
        .unwrap_or_default();
    std::iter::once(program)
        .chain(cmd.get_args().map(short))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion, capturing output; fails unless it exits 0.
/// `label` replaces the displayed command line in errors (to hide secrets).
pub(crate) fn run(cmd: &mut Command, label: Option<&str>) -> Result<Output, ClusterError> {
    let command = label.map_or_else(|| describe(cmd), str::to_owned);
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| ClusterError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&output.stdout).into_owned()
    } else {
        stderr.into_owned()
    };
    Err(ClusterError::CommandFailed {
        command,
        status: output.status.to_string(),
        stderr_tail: tail(&text, 20),
    })
}

/// Whether process `pid` exists and is not a zombie.
pub(crate) fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    if Path::new("/proc/self/stat").exists() {
        return match fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Format: "pid (comm) S ..." -- comm may contain spaces/parens.
            Ok(stat) => match stat.rfind(')') {
                Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
                None => true,
            },
            Err(_) => false,
        };
    }
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether process `pid` looks like a PostgreSQL server process (best
/// effort; `true` when it cannot be determined).
pub(crate) fn looks_like_postgres(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => {
            let comm = comm.trim();
            comm.starts_with("postgres") || comm.starts_with("postmaster")
        }
        Err(_) => !Path::new("/proc/self/comm").exists(),
    }
}

/// Sends SIGKILL to `pid` using the `kill` utility.
pub(crate) fn sigkill(pid: i32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
