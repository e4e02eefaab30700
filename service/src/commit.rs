//! Group commit of concluded rounds.
//!
//! A concluded round's writes (the node's new state, the result row, its audit entries)
//! join a queue; one writer thread takes the service's write gate, then everything queued
//! by then, and writes it in one transaction (results and entries together). Under load a
//! round's writes ride along with others', so what every commit pays (locks, the WAL
//! frames of the pages each round touches, syscalls) is paid once per batch.
//!
//! The round itself does not wait at the gate: a push round hands its writes over and
//! awaits the outcome asynchronously, so its blocking thread goes back to appraising the
//! next round while the writer works, and the batch grows with the rounds in flight.
//! Synchronous callers (pulled rounds) wait on a channel instead.

use crate::store::{NodeRecord, ResultRecord, StoreError};
use crate::Service;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

/// One concluded round's writes.
#[derive(Debug)]
pub(crate) struct RoundWrite {
    pub node: NodeRecord,
    pub record: ResultRecord,
    /// The entries recording the decision (the result; a revocation it caused).
    pub audit: Vec<custody_audit::Entry>,
}

/// Where a queued round's outcome (its result id) goes.
#[derive(Debug)]
pub(crate) enum Done {
    Blocking(std::sync::mpsc::SyncSender<Result<i64, StoreError>>),
    Async(tokio::sync::oneshot::Sender<Result<i64, StoreError>>),
}

impl Done {
    pub(crate) fn send(self, outcome: Result<i64, StoreError>) {
        // A waiter that is gone (an HTTP request dropped meanwhile) needs no answer: its
        // round is recorded either way.
        match self {
            Done::Blocking(tx) => {
                let _ = tx.try_send(outcome);
            }
            Done::Async(tx) => {
                let _ = tx.send(outcome);
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Queued {
    pub write: RoundWrite,
    pub done: Done,
}

/// The service is closing: no more rounds are written.
#[derive(Debug)]
pub(crate) struct Closed;

#[derive(Debug, Default)]
struct State {
    queued: Vec<Queued>,
    closed: bool,
}

/// The queue between concluded rounds and the writer thread.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    state: Mutex<State>,
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Pushes, takes and a flag: a panic cannot leave it half changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a round; refused (and the round dropped, so nobody waits for it) once the
    /// service is closing.
    pub(crate) fn push(&self, q: Queued) -> Result<(), Closed> {
        let mut s = self.lock();
        if s.closed {
            return Err(Closed);
        }
        s.queued.push(q);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Rounds waiting now (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().queued.len()
    }

    /// Stop the writer once the queue is empty.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Block until something is queued; false once closed and empty.
    fn wait(&self) -> bool {
        let mut s = self.lock();
        while s.queued.is_empty() && !s.closed {
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        !s.queued.is_empty()
    }

    fn take(&self) -> Vec<Queued> {
        std::mem::take(&mut self.lock().queued)
    }
}

/// Start the writer thread for `svc`. It holds the service weakly: the service closes
/// the queue when dropped, and the thread ends after answering what was queued.
pub(crate) fn start(svc: &Arc<Service>) -> std::io::Result<()> {
    let queue = svc.commits.clone();
    let weak = Arc::downgrade(svc);
    std::thread::Builder::new()
        .name("round-commit".into())
        .spawn(move || run(&queue, &weak))
        .map(drop)
}

fn run(queue: &Queue, svc: &Weak<Service>) {
    while queue.wait() {
        let Some(svc) = svc.upgrade() else {
            // The service is gone: nobody can write these any more.
            for q in queue.take() {
                q.done.send(Err(StoreError::GroupCommit(
                    "the verifier is shutting down".into(),
                )));
            }
            continue;
        };
        // The gate first, then the queue: rounds that conclude while another write holds
        // the gate join this batch.
        let gate = svc.db_writes();
        let batch = queue.take();
        // write_rounds does not panic (no unwrap, no indexing); if it ever did, the
        // batch's senders drop with it (its waiters get an error) and later rounds
        // still find a writer.
        let wrote = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| svc.write_rounds(batch)));
        drop(gate);
        if wrote.is_err() {
            tracing::error!("the group commit of rounds panicked; its rounds were answered with an error");
        }
    }
}
