//! Model instances: one OS thread per instance, each owning its runtime,
//! all taking work from the version's one bounded queue.
//!
//! This is the seam for dynamic batching: today a job is one request run
//! alone; the batcher will gather several jobs from the same queue into one
//! run and split the outputs back.
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use quiver_runtimes::{Runtime, RuntimeError, Tensor};
use tokio::sync::oneshot;

use crate::error::{Error, ErrorKind};

/// One request's work for an instance.
pub struct Job {
    pub inputs: Vec<Tensor>,
    /// Output names to return, in order; empty for all.
    pub outputs: Vec<String>,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Vec<Tensor>, RuntimeError>>,
}

/// The queue and instance threads of one model version. Dropping it closes
/// the queue: instances finish the jobs already queued, then exit.
pub struct Instances {
    queue: Option<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Instances {
    /// Starts one thread per runtime. `label` names the threads ("model:version").
    pub fn start(
        label: &str,
        runtimes: Vec<Box<dyn Runtime>>,
        queue_capacity: usize,
    ) -> std::io::Result<Instances> {
        let (tx, rx) = sync_channel::<Job>(queue_capacity);
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(runtimes.len());
        for (i, runtime) in runtimes.into_iter().enumerate() {
            let rx = Arc::clone(&rx);
            // Thread names are capped at 15 bytes by Linux; keep the tail readable in top.
            let name: String = format!("q-{label}-{i}").chars().take(15).collect();
            threads.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || serve(runtime, &rx))?,
            );
        }
        Ok(Instances {
            queue: Some(tx),
            threads,
        })
    }

    /// Queues a job without waiting: a full queue is refused at once.
    pub fn submit(&self, job: Job) -> Result<(), Error> {
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| Error::unavailable("model is unloading"))?;
        queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Error::new(
                ErrorKind::ResourceExhausted,
                "the model's request queue is full",
            ),
            TrySendError::Disconnected(_) => {
                Error::unavailable("the model's instances have stopped")
            }
        })
    }
}

impl Drop for Instances {
    fn drop(&mut self) {
        self.queue.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(mut runtime: Box<dyn Runtime>, queue: &Mutex<Receiver<Job>>) {
    loop {
        // Hold the lock only while receiving, so idle instances wait their
        // turn while a busy one computes.
        let job = match queue.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if job.reply.is_closed() {
            // The client went away while the job waited: skip the work.
            continue;
        }
        let result = runtime.run(&job.inputs, &job.outputs);
        let _ = job.reply.send(result);
    }
}
