//! Group commit: answers wait until their audit records are on disk. The
//! state machine writes the records of a batch of requests, then hands the
//! batch to the syncer thread, which fdatasyncs the file once for all of them
//! (coalescing batches that queue up meanwhile) and only then sends their
//! answers. The state machine keeps serving while the disk works; a failed
//! sync hands the batch back to be refused.

#![forbid(unsafe_code)]

use std::{
    fs::File,
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::oneshot;

use super::Action;
use crate::{
    daemon::state::{Reply, SecretKey},
    protocol::AuditFlushes,
};

/// An answer waiting for its audit record to reach the disk.
pub struct Unsynced {
    /// Where the answer goes.
    pub reply_to: oneshot::Sender<Reply>,
    /// The answer.
    pub answer: Reply,
    /// How to refuse instead, for requests that must not succeed unaudited.
    pub refusal: Option<Refusal>,
}

impl Unsynced {
    /// Sends the answer (its record is durable now).
    pub fn answer(self) {
        // The client may have gone; its record is written either way.
        let _ = self.reply_to.send(self.answer);
    }
}

/// How to refuse a put/get/exec whose record could not be made durable.
pub struct Refusal {
    /// The request's verb.
    pub action: Action,
    /// A stored secret to wipe again.
    pub undo: Option<SecretKey>,
}

/// Answers to send once `file` is synced.
pub struct SyncJob {
    /// The audit file their records were written to.
    pub file: Arc<File>,
    /// The answers.
    pub batch: Vec<Unsynced>,
}

/// How well flushes are shared: fdatasyncs made, and answers they released.
#[derive(Debug, Default)]
struct FlushCounts {
    flushes: AtomicU64,
    answers: AtomicU64,
}

impl FlushCounts {
    fn read(&self) -> AuditFlushes {
        AuditFlushes {
            flushes: self.flushes.load(Ordering::Relaxed),
            answers: self.answers.load(Ordering::Relaxed),
        }
    }
}

/// The syncer thread's inbox, and its counts.
pub struct Syncer {
    jobs: std::sync::mpsc::Sender<SyncJob>,
    counts: Arc<FlushCounts>,
}

impl Syncer {
    /// Hands `job` to the thread; gives it back if the thread has stopped.
    pub fn send(&self, job: SyncJob) -> Result<(), SyncJob> {
        self.jobs.send(job).map_err(|err| err.0)
    }

    /// How its flushes have been shared so far.
    pub fn flushes(&self) -> AuditFlushes {
        self.counts.read()
    }
}

/// Starts the syncer thread; `failed` gets back each batch whose records
/// could not be made durable. Started before seccomp, which would refuse the
/// clone.
pub fn start_syncer(
    failed: impl Fn(Vec<Unsynced>, io::Error) + Send + 'static,
) -> io::Result<Syncer> {
    let counts = Arc::new(FlushCounts::default());
    let kept = Arc::clone(&counts);
    let (jobs, queue) = std::sync::mpsc::channel::<SyncJob>();
    let (started, up) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("audit-sync".to_owned())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = started.send(());
            while let Ok(first) = queue.recv() {
                let mut batch: Vec<SyncJob> = vec![first];
                batch.extend(queue.try_iter());
                sync_and_answer(batch, &failed, &kept);
            }
        })?;
    // The thread's own start-up syscalls happen before seccomp is installed.
    up.recv()
        .map_err(|_| io::Error::other("the audit syncer did not start"))?;
    Ok(Syncer { jobs, counts })
}

/// Syncs each distinct file of `jobs` once, then answers them all, or hands
/// them all to `failed`.
fn sync_and_answer(
    jobs: Vec<SyncJob>,
    failed: &impl Fn(Vec<Unsynced>, io::Error),
    counts: &FlushCounts,
) {
    let mut synced: Vec<&Arc<File>> = Vec::new();
    let mut failure = None;
    for job in &jobs {
        if !synced.iter().any(|file| Arc::ptr_eq(file, &job.file)) {
            synced.push(&job.file);
            if let Err(err) = job.file.sync_data() {
                failure = Some(err);
            }
            counts.flushes.fetch_add(1, Ordering::Relaxed);
        }
    }
    let answers = jobs.iter().map(|job| job.batch.len() as u64).sum();
    counts.answers.fetch_add(answers, Ordering::Relaxed);
    for job in jobs {
        match &failure {
            None => job.batch.into_iter().for_each(Unsynced::answer),
            Some(err) => failed(job.batch, io::Error::new(err.kind(), err.to_string())),
        }
    }
}
