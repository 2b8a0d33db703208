//! Choosing the OS user PostgreSQL runs as.
//!
//! `initdb` and `postgres` refuse to run as root, so when the current process
//! is root (typical in CI containers) everything runs as the unprivileged
//! system user [`PG_OS_USER`], created on demand.
//!
//! The crate forbids `unsafe`, so instead of `geteuid(2)`/`getpwnam(3)` this
//! module reads `/proc/self/status` and asks `getent passwd` (which goes
//! through NSS exactly like `getpwnam`), falling back to `id -u` and parsing
//! `/etc/passwd`.

use std::fs;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::{ClusterError, tail};

/// Name of the OS user PostgreSQL runs as when the caller is root.
pub const PG_OS_USER: &str = "switchyard-pg";

/// The effective uid of the current process.
pub fn effective_uid() -> Result<u32, ClusterError> {
    if let Ok(status) = fs::read_to_string("/proc/self/status")
        && let Some(euid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
    {
        return Ok(euid);
    }
    let output = Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ClusterError::Spawn {
            command: "id -u".to_owned(),
            source,
        })?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| ClusterError::CommandFailed {
            command: "id -u".to_owned(),
            status: output.status.to_string(),
            stderr_tail: tail(&String::from_utf8_lossy(&output.stderr), 5),
        })
}

/// `(uid, gid)` of OS user `name`, or `None` if there is no such user.
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let from_getent = Command::new("getent")
        .args(["passwd", name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match from_getent {
        // Exit 2 = "not found"; anything else unsuccessful = fall back.
        Ok(o) if o.status.success() => parse_passwd(&String::from_utf8_lossy(&o.stdout), name),
        Ok(o) if o.status.code() == Some(2) => None,
        _ => fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|text| parse_passwd(&text, name)),
    }
}

/// Finds the `name:pw:uid:gid:...` entry for `name` in passwd-format text.
fn parse_passwd(text: &str, name: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// `(uid, gid)` of [`PG_OS_USER`], creating that system user with `useradd`
/// if it does not exist. Tolerates another process creating it concurrently.
pub fn ensure_pg_user() -> Result<(u32, u32), ClusterError> {
    // Serialise within this process; other processes are handled by the
    // re-check after a failed useradd.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());

    if let Some(ids) = lookup_user(PG_OS_USER) {
        return Ok(ids);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let result = useradd();
        if let Some(ids) = lookup_user(PG_OS_USER) {
            if result.is_ok() {
                tracing::info!(
                    user = PG_OS_USER,
                    uid = ids.0,
                    "created OS user for PostgreSQL"
                );
            }
            return Ok(ids);
        }
        // useradd failed (e.g. "cannot lock /etc/passwd" while another
        // process is adding the user) and the user is still missing.
        if Instant::now() >= deadline {
            let reason = match result {
                Ok(()) => "useradd succeeded but the user is still not found".to_owned(),
                Err(e) => e,
            };
            return Err(ClusterError::OsUser {
                user: PG_OS_USER.to_owned(),
                reason,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `useradd --system --no-create-home --shell /usr/sbin/nologin`.
fn useradd() -> Result<(), String> {
    let args = [
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        PG_OS_USER,
    ];
    let mut last_err = String::new();
    for program in ["useradd", "/usr/sbin/useradd", "/sbin/useradd"] {
        match Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => {
                return Err(format!(
                    "useradd failed ({}): {}",
                    o.status,
                    tail(&String::from_utf8_lossy(&o.stderr), 5)
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                last_err = format!("{program}: {e}");
            }
            Err(e) => return Err(format!("{program}: {e}")),
        }
    }
    Err(last_err)
}

/// The `(uid, gid)` PostgreSQL programs must run as: `None` (the current
/// user) unless the process is root, then [`PG_OS_USER`]'s ids.
pub fn pg_run_as() -> Result<Option<(u32, u32)>, ClusterError> {
    if effective_uid()? == 0 {
        ensure_pg_user().map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_lines() {
        let text = "root:x:0:0:root:/root:/bin/bash\n\
                    switchyard-pg:x:998:997::/home/switchyard-pg:/usr/sbin/nologin\n";
        assert_eq!(parse_passwd(text, "switchyard-pg"), Some((998, 997)));
        assert_eq!(parse_passwd(text, "root"), Some((0, 0)));
        assert_eq!(parse_passwd(text, "switchyard"), None);
    }

    #[test]
    fn root_is_found() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
    }
}
