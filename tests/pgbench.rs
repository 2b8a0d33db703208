//! pgbench through the proxy in every query mode.

mod support;

use support::Harness;

#[test]
fn pgbench_runs_clean_in_simple_extended_and_prepared_modes() {
    let h = Harness::start();
    let url = h.proxy_url();
    let init = h.run("pgbench", &["-i", "-s", "1", "-q", &url]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    for mode in ["simple", "extended", "prepared"] {
        for select_only in [true, false] {
            let mut args = vec!["-M", mode, "-c", "4", "-j", "2", "-t", "150", "-n"];
            if select_only {
                args.push("-S");
            }
            args.push(&url);
            let out = h.run("pgbench", &args);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{mode} -S={select_only}: {stdout}\n{stderr}"
            );
            assert!(
                stdout.contains("number of transactions actually processed: 600/600"),
                "{stdout}"
            );
            assert!(
                stdout.contains("number of failed transactions: 0"),
                "{stdout}"
            );
        }
    }
    // TPC-B-like runs changed the data consistently.
    let sums = h.admin_sql_app(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(delta) FROM pgbench_history)",
    );
    assert_eq!(sums, "t");
}
