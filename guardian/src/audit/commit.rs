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
            match job.file.sync_data() {
                Ok(()) => _ = counts.flushes.fetch_add(1, Ordering::Relaxed),
                Err(err) => failure = Some(err),
            }
        }
    }
    if failure.is_none() {
        let answers = jobs.iter().map(|job| job.batch.len() as u64).sum();
        counts.answers.fetch_add(answers, Ordering::Relaxed);
    }
    for job in jobs {
        match &failure {
            None => job.batch.into_iter().for_each(Unsynced::answer),
            Some(err) => failed(job.batch, io::Error::new(err.kind(), err.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::protocol::Response;

    fn waiting() -> (Unsynced, oneshot::Receiver<Reply>) {
        let (reply_to, answer) = oneshot::channel();
        let reply = Reply {
            response: Response::Revoked { holders_killed: 0 },
            secrets: Vec::new(),
            charge: None,
            files: Vec::new(),
        };
        let unsynced = Unsynced {
            reply_to,
            answer: reply,
            refusal: None,
        };
        (unsynced, answer)
    }

    #[test]
    fn one_flush_releases_every_answer_of_its_file_and_a_failed_one_counts_none() {
        let path = std::env::temp_dir().join(format!("ns-commit-{}", std::process::id()));
        let file = Arc::new(File::create(&path).unwrap());
        let counts = FlushCounts::default();
        let ((first, mut first_answer), (second, mut second_answer)) = (waiting(), waiting());
        let jobs = vec![
            SyncJob {
                file: Arc::clone(&file),
                batch: vec![first],
            },
            SyncJob {
                file,
                batch: vec![second],
            },
        ];
        sync_and_answer(jobs, &|_, err| panic!("refused: {err}"), &counts);
        assert!(first_answer.try_recv().is_ok() && second_answer.try_recv().is_ok());
        let shared = AuditFlushes {
            flushes: 1,
            answers: 2,
        };
        assert_eq!(counts.read(), shared);
        // fdatasync of /dev/null fails (EINVAL): nothing is released or counted.
        let null = Arc::new(File::open("/dev/null").unwrap());
        let refused = Cell::new(0);
        let (third, mut third_answer) = waiting();
        let job = SyncJob {
            file: null,
            batch: vec![third],
        };
        sync_and_answer(vec![job], &|batch, _| refused.set(batch.len()), &counts);
        assert_eq!(refused.get(), 1);
        assert!(
            third_answer.try_recv().is_err(),
            "answered without its record"
        );
        assert_eq!(counts.read(), shared);
        std::fs::remove_file(&path).unwrap();
    }
}
