//! How the harness launches etcd and Patroni: each member's Patroni YAML,
//! and commands run as the cluster's OS user with their output in a log.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{PatroniNode, PatroniSpec};
use crate::testcluster::error::ClusterError;
use crate::testcluster::process::{self, Ctx};

/// The member's Patroni YAML. Paths and passwords are single-quoted YAML
/// scalars.
pub(super) fn member_config(
    spec: &PatroniSpec,
    m: &PatroniNode,
    etcd: &str,
    bin_dir: &Path,
) -> String {
    let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let p = |p: &Path| q(&p.display().to_string());
    format!(
        "scope: switchyard\n\
         name: {name}\n\
         log:\n  level: INFO\n\
         restapi:\n  listen: {api}\n  connect_address: {api}\n\
         etcd3:\n  hosts: {etcd}\n  protocol: http\n\
         bootstrap:\n\
         \x20 dcs:\n\
         \x20   ttl: {ttl}\n\
         \x20   loop_wait: {loop_wait}\n\
         \x20   retry_timeout: {retry_timeout}\n\
         \x20   maximum_lag_on_failover: 1048576\n\
         \x20   synchronous_mode: {synchronous_mode}\n\
         \x20   postgresql:\n\
         \x20     use_pg_rewind: false\n\
         \x20     use_slots: true\n\
         \x20     parameters:\n\
         \x20       wal_level: replica\n\
         \x20       hot_standby: 'on'\n\
         \x20       max_connections: {max_connections}\n\
         \x20       max_wal_senders: 10\n\
         \x20       max_replication_slots: 10\n\
         \x20       fsync: 'off'\n\
         \x20       full_page_writes: 'off'\n\
         \x20 initdb:\n\
         \x20 - encoding: UTF8\n\
         \x20 - locale: C\n\
         \x20 - auth-host: scram-sha-256\n\
         \x20 - auth-local: trust\n\
         \x20 pg_hba:\n\
         \x20 - local all all trust\n\
         \x20 - local replication all trust\n\
         \x20 - host all all 127.0.0.1/32 scram-sha-256\n\
         \x20 - host replication all 127.0.0.1/32 scram-sha-256\n\
         postgresql:\n\
         \x20 listen: 127.0.0.1:{pg_port}\n\
         \x20 connect_address: 127.0.0.1:{pg_port}\n\
         \x20 data_dir: {data_dir}\n\
         \x20 bin_dir: {bin_dir}\n\
         \x20 pgpass: {pgpass}\n\
         \x20 authentication:\n\
         \x20   superuser:\n      username: postgres\n      password: {su_pw}\n\
         \x20   replication:\n      username: replicator\n      password: 'replicator-secret'\n\
         \x20 parameters:\n\
         \x20   unix_socket_directories: {sock}\n\
         \x20   shared_buffers: 32MB\n\
         \x20   password_encryption: scram-sha-256\n\
         \x20   log_line_prefix: '%m [%p] '\n\
         \x20   log_timezone: UTC\n",
        name = m.name,
        api = m.api_addr,
        ttl = spec.ttl,
        loop_wait = spec.loop_wait,
        retry_timeout = spec.retry_timeout,
        synchronous_mode = spec.synchronous_mode,
        max_connections = spec.max_connections,
        pg_port = m.pg_port,
        data_dir = p(&m.data_dir),
        bin_dir = p(bin_dir),
        pgpass = p(&m.socket_dir.join("pgpass")),
        su_pw = q(&spec.superuser_password),
        sock = p(&m.socket_dir),
    )
}

/// A [`Command`] for a non-PostgreSQL tool (`etcd`, `patroni`,
/// `patronictl`) set up like the PostgreSQL ones: the cluster's OS user,
/// no `PG*` environment, `cwd`/`HOME` = `dir`, stdin from `/dev/null`.
pub(crate) fn tool_command(ctx: &Ctx, program: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        // Python's click refuses an ASCII locale.
        .env("LC_ALL", "C.UTF-8")
        .env("HOME", dir);
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"PG") {
            cmd.env_remove(key);
        }
    }
    if let Some((uid, gid)) = ctx.run_as {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Spawns `cmd` with stdout and stderr appended to `log`.
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child, ClusterError> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| ClusterError::io(format!("open {}", log.display()), e))?;
    let err = file
        .try_clone()
        .map_err(|e| ClusterError::io(format!("open {}", log.display()), e))?;
    cmd.stdout(file).stderr(err);
    cmd.spawn().map_err(|source| ClusterError::Spawn {
        command: process::describe(cmd),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_config_is_yaml_with_quoted_secrets() {
        let spec = PatroniSpec {
            superuser_password: "it's".into(),
            ..PatroniSpec::default()
        };
        let m = PatroniNode::new("m1", Path::new("/t/m1"), 8008, 5432);
        let yaml = member_config(
            &spec,
            &m,
            "127.0.0.1:2379",
            Path::new("/usr/lib/postgresql/15/bin"),
        );
        assert!(yaml.contains("    ttl: 10\n"), "{yaml}");
        assert!(yaml.contains("    synchronous_mode: false\n"), "{yaml}");
        assert!(yaml.contains("      password: 'it''s'\n"), "{yaml}");
        assert!(yaml.contains("  data_dir: '/t/m1/data'\n"), "{yaml}");
        assert!(yaml.contains("  hosts: 127.0.0.1:2379\n"), "{yaml}");
    }
}
