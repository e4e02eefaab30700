//! Prometheus text exposition, written by hand: a few counters and one histogram do not
//! earn a metrics framework.

use crate::store::NodeTimes;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// What `/metrics` reads from outside the counters at scrape time.
#[derive(Debug, Default)]
pub struct Snapshot<'a> {
    /// Count per node state.
    pub states: &'a [(&'a str, usize)],
    /// Every node's last round and last pass.
    pub nodes: &'a [NodeTimes],
    pub nonces: usize,
    /// Migrations this process watches, by state (`running`, `exported`).
    pub migrations: &'a [(&'a str, usize)],
    /// Entries in the audit log.
    pub audit_entries: u64,
    /// `interval_secs` and `checkpoint_secs` of the configuration, for alerts.
    pub interval_secs: u64,
    pub checkpoint_secs: u64,
    /// Revocation collateral in use.
    pub collateral: &'a [Collateral],
}

/// One item of revocation collateral the verifier holds (an AMD CRL today; NVIDIA OCSP
/// responses and Intel PCS collateral once cached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collateral {
    pub kind: &'static str,
    pub issuer: String,
    /// When its issuer promises the next one (Unix seconds); `None`: no promise.
    pub next_update: Option<i64>,
}

/// Upper bounds (seconds) of the round-duration histogram.
const BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug, Default)]
pub struct Metrics {
    pub rounds_passed: AtomicU64,
    pub rounds_failed: AtomicU64,
    pub enrollments_ok: AtomicU64,
    pub enrollments_refused: AtomicU64,
    pub audit_errors: AtomicU64,
    /// Appraisals that failed with an error (each recorded as a failed round at
    /// `appraisal_error`).
    pub appraisal_errors: AtomicU64,
    /// Nodes revoked by their rounds, and removed by operators, since start.
    pub revocations: AtomicU64,
    pub removals: AtomicU64,
    /// Migrations that ended since start, by outcome, and the bytes placed.
    pub migrations_done: AtomicU64,
    pub migrations_failed: AtomicU64,
    pub migration_bytes: AtomicU64,
    /// When a round last concluded (any node), and when the checkpoint loop last found
    /// every entry signed (Unix seconds; 0: not yet).
    pub last_round_at: AtomicI64,
    pub last_checkpoint_at: AtomicI64,
    /// Group commits of concluded rounds, and the rounds they carried.
    group_commits: AtomicU64,
    group_committed_rounds: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Metrics {
    pub fn observe_round(&self, passed: bool, d: Duration) {
        if passed {
            self.rounds_passed.fetch_add(1, Relaxed);
        } else {
            self.rounds_failed.fetch_add(1, Relaxed);
        }
        let s = d.as_secs_f64();
        for (b, le) in self.buckets.iter().zip(BUCKETS) {
            if s <= le {
                b.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
        self.last_round_at.fetch_max(crate::now(), Relaxed);
    }

    /// One group commit of `rounds` concluded rounds.
    pub fn observe_group_commit(&self, rounds: usize) {
        self.group_commits.fetch_add(1, Relaxed);
        self.group_committed_rounds
            .fetch_add(u64::try_from(rounds).unwrap_or(u64::MAX), Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, snap: &Snapshot<'_>) -> String {
        let mut o = String::new();
        head(
            &mut o,
            "custody_rounds_total",
            "Attestation rounds appraised, by outcome.",
            "counter",
        );
        let _ = writeln!(
            o,
            "custody_rounds_total{{outcome=\"passed\"}} {}",
            self.rounds_passed.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "custody_rounds_total{{outcome=\"failed\"}} {}",
            self.rounds_failed.load(Relaxed)
        );
        head(
            &mut o,
            "custody_enrollments_total",
            "Enrollment attempts, by outcome.",
            "counter",
        );
        let _ = writeln!(
            o,
            "custody_enrollments_total{{outcome=\"enrolled\"}} {}",
            self.enrollments_ok.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "custody_enrollments_total{{outcome=\"refused\"}} {}",
            self.enrollments_refused.load(Relaxed)
        );
        counter(
            &mut o,
            "custody_audit_append_errors_total",
            "Audit log appends that failed.",
            self.audit_errors.load(Relaxed),
        );
        counter(
            &mut o,
            "custody_appraisal_errors_total",
            "Appraisals that failed with an error; each is recorded as a failed round at check appraisal_error.",
            self.appraisal_errors.load(Relaxed),
        );
        counter(
            &mut o,
            "custody_round_group_commits_total",
            "Store transactions that recorded concluded rounds (several rounds share one under load).",
            self.group_commits.load(Relaxed),
        );
        counter(
            &mut o,
            "custody_round_group_committed_total",
            "Concluded rounds those transactions recorded.",
            self.group_committed_rounds.load(Relaxed),
        );
        head(
            &mut o,
            "custody_round_duration_seconds",
            "Time from nonce to stored result.",
            "histogram",
        );
        for (b, le) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                o,
                "custody_round_duration_seconds_bucket{{le=\"{le}\"}} {}",
                b.load(Relaxed)
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(o, "custody_round_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "custody_round_duration_seconds_sum {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "custody_round_duration_seconds_count {count}");
        let _ = writeln!(o, "# HELP custody_nodes Enrolled nodes, by state.");
        let _ = writeln!(o, "# TYPE custody_nodes gauge");
        for (state, n) in snap.states {
            let _ = writeln!(o, "custody_nodes{{state=\"{state}\"}} {n}");
        }
        head(
            &mut o,
            "custody_node_last_round_timestamp_seconds",
            "When each node last had a round (any outcome), by node name and state.",
            "gauge",
        );
        for n in snap.nodes.iter() {
            if let Some(t) = n.last_round_at {
                let _ = writeln!(
                    o,
                    "custody_node_last_round_timestamp_seconds{{node=\"{}\",state=\"{}\"}} {t}",
                    label(&n.name),
                    n.state.as_str()
                );
            }
        }
        head(
            &mut o,
            "custody_node_last_pass_timestamp_seconds",
            "When each node last passed a round, by node name and state.",
            "gauge",
        );
        for n in snap.nodes.iter() {
            if let Some(t) = n.last_pass_at {
                let _ = writeln!(
                    o,
                    "custody_node_last_pass_timestamp_seconds{{node=\"{}\",state=\"{}\"}} {t}",
                    label(&n.name),
                    n.state.as_str()
                );
            }
        }
        gauge(
            &mut o,
            "custody_last_round_timestamp_seconds",
            "When this verifier last concluded a round, any node (0: none since start).",
            self.last_round_at.load(Relaxed),
        );
        gauge(
            &mut o,
            "custody_attestation_interval_seconds",
            "How often every node is attested (interval_secs).",
            snap.interval_secs,
        );
        counter(
            &mut o,
            "custody_revocations_total",
            "Nodes revoked by failed rounds since start.",
            self.revocations.load(Relaxed),
        );
        counter(
            &mut o,
            "custody_node_removals_total",
            "Nodes removed by an operator since start.",
            self.removals.load(Relaxed),
        );
        head(
            &mut o,
            "custody_migrations",
            "Migrations in progress, by state.",
            "gauge",
        );
        for state in ["running", "exported"] {
            let n = snap
                .migrations
                .iter()
                .filter(|(s, _)| *s == state)
                .map(|(_, n)| n)
                .sum::<usize>();
            let _ = writeln!(o, "custody_migrations{{state=\"{state}\"}} {n}");
        }
        head(
            &mut o,
            "custody_migrations_total",
            "Migrations ended since start, by outcome.",
            "counter",
        );
        let _ = writeln!(
            o,
            "custody_migrations_total{{outcome=\"done\"}} {}",
            self.migrations_done.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "custody_migrations_total{{outcome=\"failed\"}} {}",
            self.migrations_failed.load(Relaxed)
        );
        counter(
            &mut o,
            "custody_migration_bytes_total",
            "Checkpoint bytes placed by migrations since start.",
            self.migration_bytes.load(Relaxed),
        );
        gauge(
            &mut o,
            "custody_audit_entries",
            "Entries in the audit log.",
            snap.audit_entries,
        );
        gauge(
            &mut o,
            "custody_audit_checkpoint_timestamp_seconds",
            "When the checkpoint loop last found every entry under a signed checkpoint (0: not yet).",
            self.last_checkpoint_at.load(Relaxed),
        );
        gauge(
            &mut o,
            "custody_audit_checkpoint_interval_seconds",
            "How often the log is checkpointed (checkpoint_secs).",
            snap.checkpoint_secs,
        );
        head(
            &mut o,
            "custody_nonces_outstanding",
            "Issued nonces not yet used or expired.",
            "gauge",
        );
        let _ = writeln!(o, "custody_nonces_outstanding {}", snap.nonces);
        head(
            &mut o,
            "custody_collateral_next_update_timestamp_seconds",
            "When each item of revocation collateral in use is due to be replaced (its nextUpdate; 0: none given).",
            "gauge",
        );
        for c in snap.collateral {
            let _ = writeln!(
                o,
                "custody_collateral_next_update_timestamp_seconds{{kind=\"{}\",issuer=\"{}\"}} {}",
                label(c.kind),
                label(&c.issuer),
                c.next_update.unwrap_or(0)
            );
        }
        o
    }
}

/// An unlabelled counter: its header and its one sample.
fn counter(o: &mut String, name: &str, help: &str, value: u64) {
    head(o, name, help, "counter");
    let _ = writeln!(o, "{name} {value}");
}

/// An unlabelled gauge: its header and its one sample.
fn gauge(o: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    head(o, name, help, "gauge");
    let _ = writeln!(o, "{name} {value}");
}

/// A label value, escaped as the exposition format wants (`\`, `"`, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The `# HELP` and `# TYPE` lines that open a metric family.
fn head(o: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_round(true, Duration::from_micros(800));
        m.observe_round(false, Duration::from_millis(30));
        let t = m.render(&Snapshot {
            states: &[("trusted", 1)],
            ..Snapshot::default()
        });
        assert!(t.contains("custody_round_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(t.contains("custody_round_duration_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(t.contains("custody_round_duration_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(t.contains("custody_rounds_total{outcome=\"failed\"} 1\n"));
        assert!(t.contains("custody_nodes{state=\"trusted\"} 1\n"));
    }

    #[test]
    fn collateral_says_when_each_item_is_due_and_escapes_its_issuer() {
        let m = Metrics::default();
        let c = [
            Collateral {
                kind: "amd_crl",
                issuer: "CN=ARK-Milan, O=\"AMD\"".into(),
                next_update: Some(1_767_225_600),
            },
            Collateral {
                kind: "amd_crl",
                issuer: "ARK-Genoa".into(),
                next_update: None,
            },
        ];
        let t = m.render(&Snapshot {
            collateral: &c,
            ..Snapshot::default()
        });
        assert!(t.contains("# TYPE custody_collateral_next_update_timestamp_seconds gauge\n"));
        assert!(t.contains(
            "custody_collateral_next_update_timestamp_seconds{kind=\"amd_crl\",issuer=\"CN=ARK-Milan, O=\\\"AMD\\\"\"} 1767225600\n"
        ), "{t}");
        assert!(t.contains(
            "custody_collateral_next_update_timestamp_seconds{kind=\"amd_crl\",issuer=\"ARK-Genoa\"} 0\n"
        ));
    }

    #[test]
    fn group_commits_count_transactions_and_rounds() {
        let m = Metrics::default();
        m.observe_group_commit(1);
        m.observe_group_commit(3);
        let t = m.render(&Snapshot::default());
        assert!(t.contains("custody_round_group_commits_total 2\n"), "{t}");
        assert!(t.contains("custody_round_group_committed_total 4\n"), "{t}");
    }
}
