//! Prometheus text exposition, written by hand: a few counters and one histogram do not
//! earn a metrics framework.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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
    }

    /// One group commit of `rounds` concluded rounds.
    pub fn observe_group_commit(&self, rounds: usize) {
        self.group_commits.fetch_add(1, Relaxed);
        self.group_committed_rounds
            .fetch_add(u64::try_from(rounds).unwrap_or(u64::MAX), Relaxed);
    }

    /// The exposition text; `nodes` is the count per state.
    pub fn render(&self, nodes: &[(&str, usize)], nonces: usize) -> String {
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
        for (state, n) in nodes {
            let _ = writeln!(o, "custody_nodes{{state=\"{state}\"}} {n}");
        }
        head(
            &mut o,
            "custody_nonces_outstanding",
            "Issued nonces not yet used or expired.",
            "gauge",
        );
        let _ = writeln!(o, "custody_nonces_outstanding {nonces}");
        o
    }
}

/// An unlabelled counter: its header and its one sample.
fn counter(o: &mut String, name: &str, help: &str, value: u64) {
    head(o, name, help, "counter");
    let _ = writeln!(o, "{name} {value}");
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
        let t = m.render(&[("trusted", 1)], 0);
        assert!(t.contains("custody_round_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(t.contains("custody_round_duration_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(t.contains("custody_round_duration_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(t.contains("custody_rounds_total{outcome=\"failed\"} 1\n"));
        assert!(t.contains("custody_nodes{state=\"trusted\"} 1\n"));
    }

    #[test]
    fn group_commits_count_transactions_and_rounds() {
        let m = Metrics::default();
        m.observe_group_commit(1);
        m.observe_group_commit(3);
        let t = m.render(&[], 0);
        assert!(t.contains("custody_round_group_commits_total 2\n"), "{t}");
        assert!(t.contains("custody_round_group_committed_total 4\n"), "{t}");
    }
}
