//! pgbench through the proxy in every query mode.

mod support;

use support::Harness;

#[test]
fn pgbench_runs_clean_in_simple_extended_and_prepared_modes() {
    let h = Harness::start();
    h.pgbench_every_mode(4, 150, || {});
    // TPC-B-like runs changed the data consistently.
    let sums = h.admin_sql_app(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(delta) FROM pgbench_history)",
    );
    assert_eq!(sums, "t");
}
