//! One Patroni member of a [`PatroniCluster`](super::PatroniCluster): its
//! Patroni process, the PostgreSQL that Patroni manages, and their logs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::testcluster::process;

/// How long Patroni gets to stop its PostgreSQL on SIGTERM before both are
/// killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// One Patroni member and the PostgreSQL it manages.
#[derive(Debug)]
pub struct PatroniNode {
    /// Patroni member name: `m1`, `m2`, ...
    pub name: String,
    /// Base URL of its REST API, `http://127.0.0.1:PORT`.
    pub api_url: String,
    /// `127.0.0.1:PORT` of its REST API.
    pub api_addr: String,
    /// PostgreSQL TCP port on 127.0.0.1.
    pub pg_port: u16,
    /// PostgreSQL data directory.
    pub data_dir: PathBuf,
    /// Directory of PostgreSQL's unix socket.
    pub socket_dir: PathBuf,
    /// The member's Patroni configuration file.
    pub config_file: PathBuf,
    /// Patroni's log (PostgreSQL's own output goes there too).
    pub log_file: PathBuf,
    child: Mutex<Option<Child>>,
}

impl PatroniNode {
    /// A member named `name` living in `dir`, not started yet.
    pub(super) fn new(name: &str, dir: &Path, api_port: u16, pg_port: u16) -> Self {
        PatroniNode {
            name: name.to_owned(),
            api_url: format!("http://127.0.0.1:{api_port}"),
            api_addr: format!("127.0.0.1:{api_port}"),
            pg_port,
            data_dir: dir.join("data"),
            socket_dir: dir.to_path_buf(),
            config_file: dir.join("patroni.yml"),
            log_file: dir.join("patroni.log"),
            child: Mutex::new(None),
        }
    }

    /// Records the started Patroni process.
    pub(super) fn set_child(&self, child: Child) {
        *self.lock_child() = Some(child);
    }

    /// `127.0.0.1:PG_PORT`: the address the proxy connects to.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.pg_port)
    }

    /// When this member's PostgreSQL was last promoted (wall clock): its
    /// `selected new timeline ID` log line, the moment it leaves recovery;
    /// it takes writes a few milliseconds later, before the postmaster logs
    /// `ready to accept connections`. `None` if it was never promoted (the
    /// bootstrap leader is initdb'd, not promoted).
    /// Lets a drill measure "promotion → first write through the proxy".
    pub fn promoted_at(&self) -> Option<SystemTime> {
        self.logged_at(PROMOTION_LINE)
    }

    /// When PostgreSQL last logged a line containing `needle` (wall clock),
    /// e.g. `received fast shutdown request` to time a switchover.
    pub fn logged_at(&self, needle: &str) -> Option<SystemTime> {
        last_logged_at(&self.log(), needle)
    }

    /// Patroni's log so far (PostgreSQL's own log lines included).
    pub fn log(&self) -> String {
        fs::read(&self.log_file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether this member's Patroni process is alive.
    pub fn patroni_running(&self) -> bool {
        self.lock_child()
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The postmaster's pid from `postmaster.pid`, when it is alive and is
    /// PostgreSQL.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        (process::pid_alive(pid) && process::looks_like_postgres(pid)).then_some(pid)
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `SIGKILL`s Patroni and then its postmaster (the crash the failover
    /// drills simulate). Idempotent.
    pub fn kill(&self) {
        let postmaster = self.postmaster_pid();
        if let Some(mut child) = self.lock_child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = postmaster {
            process::sigkill(pid);
        }
    }

    /// `SIGTERM` to Patroni (it stops PostgreSQL itself, fast mode).
    pub(super) fn terminate(&self) {
        if let Some(child) = self.lock_child().as_ref() {
            signal(child.id(), "TERM");
        }
    }

    /// Waits (bounded) for Patroni to exit after [`Self::terminate`], then
    /// kills whatever is left.
    pub(super) fn reap(&self) {
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.patroni_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

/// What PostgreSQL logs as it leaves recovery on a promotion.
const PROMOTION_LINE: &str = "LOG:  selected new timeline ID";

/// When the last PostgreSQL line of `log` containing `needle` was written.
/// PostgreSQL lines start with `%m` (`2026-11-26 06:21:11.123 UTC`,
/// `log_timezone = UTC`); Patroni's own lines do not parse.
fn last_logged_at(log: &str, needle: &str) -> Option<SystemTime> {
    let line = log.lines().rev().find(|l| l.contains(needle))?;
    parse_log_timestamp(line)
}

/// Parses the leading `YYYY-MM-DD HH:MM:SS.mmm UTC` of a log line.
fn parse_log_timestamp(line: &str) -> Option<SystemTime> {
    let stamp = line.get(..27)?;
    if !stamp.ends_with(" UTC") {
        return None;
    }
    let num = |range: std::ops::Range<usize>| stamp.get(range)?.parse::<u64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second, millis) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
    // days_from_civil), valid for any year after 1970.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y % 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
}

/// Sends `SIG<name>` to `pid` with the `kill` utility (the crate forbids
/// `unsafe`, so no `libc::kill`).
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_time_is_read_from_the_postgres_log() {
        let log = "2026-11-26 06:21:01,622 INFO: no action. I am (m2), a secondary\n\
                   2026-11-26 06:21:11.301 UTC [29001] LOG:  received promote request\n\
                   2026-11-26 06:21:11.305 UTC [29001] LOG:  selected new timeline ID: 2\n\
                   2026-11-26 06:21:11.320 UTC [29000] LOG:  database system is ready to accept connections\n";
        let at = last_logged_at(log, PROMOTION_LINE).unwrap();
        let since_epoch = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        // `date -u -d '2026-11-26 06:21:11.305' +%s.%3N` = 1795674071.305
        assert_eq!(since_epoch, Duration::from_millis(1_795_674_071_305));
        let bootstrap = "2026-11-26 06:20:55.000 UTC [1] LOG:  database system is ready to accept connections\n";
        assert_eq!(last_logged_at(bootstrap, PROMOTION_LINE), None);
        assert_eq!(parse_log_timestamp("2026-11-26 06:21:11,622 INFO: x"), None);
    }
}
