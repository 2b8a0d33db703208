//! `switchyard demo` end to end: it starts, its URL works, Ctrl-C cleans up.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_prints_a_working_url_and_ctrl_c_leaves_no_postgres_behind() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut url = None;
    let mut node_ports = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while url.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("demo printed no postgres:// URL in time");
        let trimmed = line.trim();
        if (trimmed.starts_with("primary") || trimmed.starts_with("replica"))
            && let Some(port) = trimmed.rsplit(':').next()
        {
            node_ports.push(port.trim().to_owned());
        }
        if line.starts_with("postgres://") {
            url = Some(line);
        }
    }
    let url = url.unwrap();
    assert_eq!(node_ports.len(), 3, "expected primary + 2 replicas");

    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-d",
            &url,
            "-c",
            // Reads go to replicas in the demo; the hint sends this one to the primary.
            "/* switchyard: primary */ SELECT pg_is_in_recovery(), current_user",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "f|app");

    // Ctrl-C.
    Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "demo did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    for port in node_ports {
        let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
        let listing = String::from_utf8_lossy(&ps.stdout);
        assert!(
            !listing
                .lines()
                .any(|l| l.contains("postgres") && l.contains(&format!("-p {port}"))),
            "a postgres on port {port} survived the demo"
        );
        assert!(std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err());
    }
}

#[test]
fn demo_failover_drill_loses_nothing_and_resumes_writes_within_a_second() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["demo", "--failover"])
        .env("SWITCHYARD_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figure = |label: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"));
        line[line.find(':').unwrap() + 1..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no figure in {line:?}"))
    };
    assert!(figure("writes acknowledged") > 0);
    assert_eq!(figure("acknowledged writes lost"), 0);
    assert_eq!(figure("taken by a non-primary"), 0);
    assert_eq!(figure("client connections dropped"), 0);
    assert!(figure("promotion -> first write") <= 1000);
}
