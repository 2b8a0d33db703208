//! The command line: `check` validates and names the bad key.

use std::process::Command;

fn check(config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const VALID: &str = r#"
[cluster]
nodes = ["127.0.0.1:5432"]
primary = "127.0.0.1:5432"
[[users]]
name = "app"
password = "x"
"#;

#[test]
fn check_accepts_the_shipped_example_and_a_minimal_config() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/switchyard.toml"
    ))
    .unwrap();
    let (ok, text) = check(&example, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("configuration is valid"));
    assert!(check(VALID, &[]).0);
}

#[test]
fn check_fails_naming_the_bad_key() {
    let cases = [
        (
            format!("{VALID}\n[server]\nlisten = \"nowhere\"\n"),
            "server.listen",
        ),
        (
            format!("{VALID}\n[server]\nlisten_port = 5\n"),
            "listen_port",
        ),
        (
            VALID.replace(
                "primary = \"127.0.0.1:5432\"",
                "primary = \"127.0.0.2:5432\"",
            ),
            "cluster.primary",
        ),
        (
            format!("{VALID}\n[server]\nstartup_timeout = \"soon\"\n"),
            "startup_timeout",
        ),
        (format!("{VALID}\n[tls]\nmode = \"sometimes\"\n"), "mode"),
    ];
    for (config, key) in cases {
        let (ok, text) = check(&config, &[]);
        assert!(!ok, "accepted a config with a bad {key}");
        assert!(text.contains(key), "message does not name {key}: {text}");
    }
}

#[test]
fn environment_overrides_are_applied_and_checked() {
    let (ok, text) = check(VALID, &[("SWITCHYARD_SERVER_LISTEN", "not-an-address")]);
    assert!(!ok);
    assert!(text.contains("server.listen"), "{text}");
    let (ok, text) = check(VALID, &[("SWITCHYARD_NOPE_X", "1")]);
    assert!(!ok);
    assert!(text.contains("SWITCHYARD_NOPE_X"), "{text}");
    assert!(check(VALID, &[("SWITCHYARD_SERVER_LISTEN", "127.0.0.1:7777")]).0);
}

#[test]
fn check_loads_the_tls_files_and_names_the_one_that_fails() {
    let (ok, text) = check(
        &format!(
            "{VALID}\n[tls]\nmode = \"require\"\ncert = \"/nonexistent/tls.crt\"\nkey = \"/nonexistent/tls.key\"\n"
        ),
        &[],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("/nonexistent/tls.crt"), "{text}");
    let (ok, text) = check(
        VALID,
        &[
            ("SWITCHYARD_SERVER_TLS_MODE", "verify-full"),
            ("SWITCHYARD_SERVER_TLS_CA_FILE", "/nonexistent/ca.pem"),
        ],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("/nonexistent/ca.pem"), "{text}");
}
