//! Series that mirror state kept elsewhere (pool gauges and counters, pin
//! counters, logged-in clients), brought up to date when `/metrics` is
//! scraped rather than on every change, so the hot path pays nothing.

use prometheus::IntCounter;

use crate::proxy::Shared;
use crate::router::effects::PinReason;

/// Brings every mirrored series of `shared.metrics` up to date.
pub fn refresh(shared: &Shared) {
    let metrics = &shared.metrics;
    let mut active = 0;
    let mut waiting = 0;
    metrics.server_connections.reset();
    for (node, open) in shared.pools.node_connections() {
        metrics
            .node_server_connections
            .with_label_values(&[node.as_str()])
            .set(as_i64(open));
    }
    for pool in shared.pools.all() {
        let key = pool.key();
        let labels = [key.node.as_str(), key.database.as_str(), key.user.as_str()];
        let stats = pool.stats();
        active += stats.active;
        waiting += stats.waiting;
        let opening = stats
            .open
            .saturating_sub(stats.active + stats.idle + stats.testing);
        for (state, value) in [
            ("active", stats.active),
            ("idle", stats.idle),
            ("testing", stats.testing),
            ("opening", opening),
        ] {
            let [node, database, user] = labels;
            metrics
                .server_connections
                .with_label_values(&[node, database, user, state])
                .set(as_i64(value));
        }
        metrics
            .pool_max_size
            .with_label_values(&labels)
            .set(as_i64(pool.settings().max_size));
        catch_up(
            &metrics.server_connects.with_label_values(&labels),
            stats.connects,
        );
        catch_up(
            &metrics.server_connect_errors.with_label_values(&labels),
            stats.connect_errors,
        );
        catch_up(
            &metrics.checkouts.with_label_values(&labels),
            stats.checkouts,
        );
        catch_up(
            &metrics.checkout_timeouts.with_label_values(&labels),
            stats.checkout_timeouts,
        );
        let [node, database, user] = labels;
        for (reason, value) in [
            ("broken", stats.discarded_broken),
            ("session", stats.discarded_by_session),
            ("idle_timeout", stats.closed_idle),
            ("max_lifetime", stats.closed_lifetime),
        ] {
            let child = metrics
                .server_connections_closed
                .with_label_values(&[node, database, user, reason]);
            catch_up(&child, value);
        }
    }
    // Session pooling: each client holds its own server connection.
    for (node, count) in shared.clients.session_mode_by_node() {
        metrics
            .server_connections
            .with_label_values(&[node.as_str(), "", "", "active"])
            .add(as_i64(count));
        active += count;
    }
    let clients = shared.clients.len();
    let idle = clients.saturating_sub(active + waiting);
    for (state, value) in [("active", active), ("waiting", waiting), ("idle", idle)] {
        metrics
            .client_connections
            .with_label_values(&[state])
            .set(as_i64(value));
    }
    for reason in PinReason::ALL {
        catch_up(
            &metrics.pins.with_label_values(&[pin_label(reason)]),
            shared.pins.get(reason),
        );
    }
    metrics.paused.set(i64::from(shared.pause.is_paused()));
}

/// The `reason` label of a pin.
pub fn pin_label(reason: PinReason) -> &'static str {
    match reason {
        PinReason::TempTable => "temp_table",
        PinReason::Listen => "listen",
        PinReason::AdvisoryLock => "advisory_lock",
        PinReason::HoldCursor => "hold_cursor",
        PinReason::SqlPrepare => "sql_prepare",
        PinReason::Other(_) => "other",
    }
}

/// Raises a mirrored counter to `value` (sources only grow).
fn catch_up(counter: &IntCounter, value: u64) {
    let behind = value.saturating_sub(counter.get());
    if behind > 0 {
        counter.inc_by(behind);
    }
}

fn as_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
