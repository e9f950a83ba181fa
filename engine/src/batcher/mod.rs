//! The scheduler of one model version: a bounded priority queue, the dynamic
//! batching policy, and one OS thread per model instance that takes batches
//! from the queue and runs them on the instance's own runtime.
mod background;
pub mod batch;
mod job;
pub mod policy;
pub mod queue;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_runtimes::{Runtime, Tensor};
use tokio::sync::oneshot;

use super::stats::VersionStats;
use crate::error::{Error, ErrorKind, Result};
use crate::tap::Execution;
pub use job::{Answer, Job};

/// Executions numbered process-wide, so that requests that ran together
/// share a number whatever version or instance ran them.
static EXECUTIONS: AtomicU64 = AtomicU64::new(1);
use queue::{JobQueue, QueueConfig, Taken};

/// The dynamic batcher's and queue's settings for one model version.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub queue: QueueConfig,
    pub preserve_ordering: bool,
    /// The OS scheduling policy of the instance threads.
    pub threads: InstanceScheduling,
}

/// How the OS schedules a version's instance threads (`--instance-scheduling`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InstanceScheduling {
    /// Linux's `SCHED_BATCH`: a woken instance does not preempt the I/O
    /// thread that queued the request, which goes on queueing the requests
    /// that came with it: fewer, larger batches on a busy core.
    #[default]
    Batch,
    /// The default policy: a woken instance may preempt at once.
    Normal,
}

impl std::str::FromStr for InstanceScheduling {
    type Err = String;
    fn from_str(s: &str) -> Result<InstanceScheduling, String> {
        match s {
            "batch" => Ok(InstanceScheduling::Batch),
            "normal" => Ok(InstanceScheduling::Normal),
            other => Err(format!(
                "'{other}' is not an instance scheduling policy (batch, normal)"
            )),
        }
    }
}

/// The queue and instance threads of one version. Dropping it closes the
/// queue and returns at once: the instances finish what is queued, drop their
/// runtimes (the model's memory) on their own threads, and exit. The last
/// `Arc` of a version may be dropped by a request on an I/O thread, so this
/// must never wait for them.
pub struct Scheduler {
    queue: Arc<JobQueue>,
    #[cfg(test)]
    reorder: Option<Arc<Reorder>>,
}

impl Scheduler {
    /// Starts one instance thread per runtime. `label` names the threads.
    pub fn start(
        label: &str,
        runtimes: Vec<Box<dyn Runtime>>,
        config: SchedulerConfig,
        stats: Arc<VersionStats>,
    ) -> std::io::Result<Scheduler> {
        let queue = Arc::new(JobQueue::new(config.queue));
        let reorder = config.preserve_ordering.then(|| Arc::new(Reorder::default()));
        for (i, runtime) in runtimes.into_iter().enumerate() {
            let (shared, stats, reorder) = (Arc::clone(&queue), Arc::clone(&stats), reorder.clone());
            // Linux caps thread names at 15 bytes.
            let name: String = format!("q-{label}-{i}").chars().take(15).collect();
            // Detached: the thread ends by itself once the queue is closed and empty.
            let threads = config.threads;
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                if threads == InstanceScheduling::Batch {
                    batch_scheduling();
                }
                serve(runtime, &shared, &stats, reorder)
            });
            if let Err(e) = spawned {
                queue.close(); // lets the threads already started exit
                return Err(e);
            }
        }
        Ok(Scheduler {
            queue,
            #[cfg(test)]
            reorder,
        })
    }

    pub fn queue_config(&self) -> &QueueConfig {
        self.queue.config()
    }

    /// Resolves a request's `priority` and `timeout` (µs) parameters into its
    /// level and queue timeout, as Triton does.
    pub fn priority_and_timeout(
        &self,
        priority: Option<i64>,
        timeout_us: Option<i64>,
    ) -> Result<(usize, Option<Duration>)> {
        let config = self.queue.config();
        let levels = config.levels.len();
        let level = match priority {
            None | Some(0) => config.default_level,
            Some(p) if p >= 1 && (p as u64) <= levels as u64 => (p - 1) as usize,
            Some(p) if levels <= 1 => {
                // A model without priority levels ignores the parameter, as Triton does.
                let _ = p;
                config.default_level
            }
            Some(p) => {
                return Err(Error::invalid(format!(
                    "parameter 'priority' is {p}; this model has levels 1..={levels}"
                )));
            }
        };
        let requested = match timeout_us {
            None | Some(0) => None,
            Some(t) if t > 0 => Some(Duration::from_micros(t as u64)),
            Some(t) => {
                return Err(Error::invalid(format!(
                    "parameter 'timeout' is {t}; it must be microseconds >= 0"
                )));
            }
        };
        Ok((level, config.levels[level].timeout(requested)))
    }

    /// Queues a job without waiting: a full queue is refused at once.
    pub fn submit(&self, job: Job) -> Result<()> {
        self.queue.push(job)
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// One request's answer, ready to send.
type Delivery = (oneshot::Sender<Result<Answer>>, Result<Answer>);

/// Delivers batches' answers in the order the batches left the queue
/// (`preserve_ordering`), whichever instance finishes first. An instance that
/// finishes ahead of its turn parks its answers here and goes on to its next
/// batch: ordering costs the early answers their wait, never an instance.
#[derive(Default)]
struct Reorder {
    state: Mutex<ReorderState>,
}

#[derive(Default)]
struct ReorderState {
    /// The ticket whose answers go out next.
    next: u64,
    parked: BTreeMap<u64, Vec<Delivery>>,
}

impl Reorder {
    fn deliver(&self, ticket: u64, answers: Vec<Delivery>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if ticket != st.next {
            st.parked.insert(ticket, answers);
            return;
        }
        send(answers);
        st.next += 1;
        loop {
            let next = st.next;
            let Some(answers) = st.parked.remove(&next) else { break };
            send(answers);
            st.next += 1;
        }
    }

    /// Batches finished ahead of their turn.
    #[cfg(test)]
    fn parked(&self) -> usize {
        self.state.lock().unwrap().parked.len()
    }
}

fn send(answers: Vec<Delivery>) {
    for (reply, answer) in answers {
        // The client may have gone; nothing is waiting for the answer then.
        let _ = reply.send(answer);
    }
}

fn serve(mut runtime: Box<dyn Runtime>, queue: &JobQueue, stats: &VersionStats, reorder: Option<Arc<Reorder>>) {
    let timed_out = |job: Job| {
        let waited = job.enqueued.elapsed();
        stats.dequeued(waited);
        let _ = job.reply.send(Err(Error::new(
            ErrorKind::DeadlineExceeded,
            format!(
                "the request waited {} µs in the queue, past its timeout",
                waited.as_micros()
            ),
        )));
    };
    let cancelled = |job: Job| {
        stats.dequeued(job.enqueued.elapsed());
        stats.cancelled();
    };
    while let Some(Taken { ticket, jobs }) = queue.next_batch(timed_out, cancelled) {
        let started = Instant::now();
        let queued: Vec<Duration> = jobs
            .iter()
            .map(|j| started.saturating_duration_since(j.enqueued))
            .collect();
        for q in &queued {
            stats.dequeued(*q);
        }
        let mut timing = batch::Timing::default();
        let results = execute(&mut *runtime, &jobs, &mut timing);
        let rows: usize = jobs.iter().map(|j| j.rows).sum();
        let n = jobs.len();
        // Recorded before answering, so a client that reads the statistics
        // after its answer sees its own execution.
        stats.batch(n, rows, timing.input, timing.infer, timing.output);
        let execution = Execution {
            id: EXECUTIONS.fetch_add(1, Ordering::Relaxed),
            requests: n,
            input: timing.input,
            infer: timing.infer,
            output: timing.output,
        };
        let answers: Vec<Delivery> = jobs
            .into_iter()
            .zip(results)
            .zip(queued)
            .map(|((job, result), queued)| {
                let answer = result.map(|outputs| Answer {
                    outputs,
                    queued,
                    batch_rows: rows,
                    execution,
                });
                (job.reply, answer)
            })
            .collect();
        // Out of flight before the answers go: a client that sends its next
        // request the moment it has this answer must not find itself
        // counted twice (the adaptive delay would think it had company).
        queue.finished(n);
        match &reorder {
            Some(r) => r.deliver(ticket, answers),
            None => send(answers),
        }
    }
}

/// Runs a batch and returns each request's own result. When a batch of
/// several fails, its requests run again one by one, so only a request at
/// fault fails (everything that can be checked per request already was,
/// before it joined). Requests also run alone in the (astronomically
/// unlikely) case that two with different shapes collided on their shape key.
fn execute(runtime: &mut dyn Runtime, jobs: &[Job], timing: &mut batch::Timing) -> Vec<Result<Vec<Tensor>>> {
    let _lowered = jobs.iter().all(|j| j.background).then(background::Lowered::enter);
    let first = &jobs[0];
    if jobs[1..].iter().all(|j| batch::same_shape(&first.inputs, &j.inputs)) {
        match run_guarded(runtime, jobs, timing) {
            Ok(outputs) => return outputs.into_iter().map(Ok).collect(),
            Err(e) if jobs.len() == 1 => return vec![Err(e)],
            Err(e) => {
                tracing::debug!(requests = jobs.len(), error = %e.message, "batch failed; running its requests one by one")
            }
        }
    }
    jobs.iter()
        .map(|j| run_guarded(runtime, std::slice::from_ref(j), timing).map(|mut v| v.remove(0)))
        .collect()
}

/// A runtime that panics fails the run, not the instance: the thread lives
/// on to serve the next batch (and preserve_ordering's turn passes).
fn run_guarded(runtime: &mut dyn Runtime, jobs: &[Job], timing: &mut batch::Timing) -> Result<Vec<Vec<Tensor>>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| batch::run(runtime, jobs, timing))).unwrap_or_else(|_| {
        Err(Error::internal(
            "the model's runtime panicked while running this request",
        ))
    })
}

/// Puts the calling instance thread under Linux's `SCHED_BATCH`: woken by
/// a request, it no longer preempts the thread that queued it, which goes
/// on reading (and queueing) the requests that arrived with it, so that a
/// busy core runs fewer, larger batches and switches less (fraud_mlp on one
/// core at c16: +37% over gRPC, p99 halved; docs/performance.md). An idle
/// core still runs it at once; its share of the CPU is unchanged.
fn batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: the calling thread (0) and a valid parameter block.
        let done = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == 0;
        if !done {
            tracing::debug!(error = %std::io::Error::last_os_error(), "SCHED_BATCH refused; the default policy stays");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use quiver_runtimes::{DataType, InputBatch, ModelIo, RuntimeError, TensorSpec};

    use super::policy::BatchingConfig;
    use super::queue::{QueuePolicy, TimeoutAction};
    use super::*;

    /// Runs only when the test opens the gate, and logs the request ids
    /// (the first byte of each request's data) of every batch it ran.
    type TakenLog = Arc<Mutex<Vec<(usize, u8)>>>;

    struct Gated {
        io: ModelIo,
        gate: mpsc::Receiver<()>,
        log: Arc<Mutex<Vec<Vec<u8>>>>,
        /// (instance, request id) logged when a job is taken, before the gate.
        taken: Option<(usize, TakenLog)>,
    }

    impl Runtime for Gated {
        fn io(&self) -> &ModelIo {
            &self.io
        }
        fn run(&mut self, inputs: &[InputBatch<'_>], _: &[String]) -> std::result::Result<Vec<Tensor>, RuntimeError> {
            if let Some((instance, taken)) = &self.taken {
                taken.lock().unwrap().push((*instance, inputs[0].parts[0][0]));
            }
            self.gate
                .recv()
                .map_err(|_| RuntimeError::Execution("gate closed".into()))?;
            let ids: Vec<u8> = inputs[0].parts.iter().map(|p| p[0]).collect();
            self.log.lock().unwrap().push(ids);
            let data: Vec<u8> = inputs[0].parts.concat();
            Ok(vec![Tensor {
                name: "y".into(),
                datatype: DataType::Uint8,
                shape: inputs[0].shape.clone(),
                data: data.into(),
            }])
        }
    }

    /// x UINT8 [-1, 1] -> y, the shape every test runtime here takes.
    fn uint8_io() -> ModelIo {
        let spec = TensorSpec {
            name: "x".into(),
            datatype: DataType::Uint8,
            shape: vec![-1, 1],
        };
        ModelIo {
            inputs: vec![spec.clone()],
            outputs: vec![TensorSpec {
                name: "y".into(),
                ..spec
            }],
        }
    }

    struct Harness {
        scheduler: Scheduler,
        gate: mpsc::Sender<()>,
        log: Arc<Mutex<Vec<Vec<u8>>>>,
        stats: Arc<VersionStats>,
    }

    fn harness(levels: Vec<QueuePolicy>, batching: Option<BatchingConfig>, capacity: usize) -> Harness {
        let (gate, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let io = uint8_io();
        let runtime = Gated {
            io,
            gate: rx,
            log: Arc::clone(&log),
            taken: None,
        };
        let stats = Arc::new(VersionStats::new("gated", 1));
        let config = SchedulerConfig {
            queue: QueueConfig {
                capacity,
                levels,
                default_level: 0,
                batching,
            },
            preserve_ordering: false,
            threads: InstanceScheduling::default(),
        };
        let scheduler = Scheduler::start("gated", vec![Box::new(runtime)], config, Arc::clone(&stats)).unwrap();
        Harness {
            scheduler,
            gate,
            log,
            stats,
        }
    }

    /// The scheduling policy (`/proc/.../stat` field 41) of this process's
    /// thread named `name`, once it has one.
    #[cfg(target_os = "linux")]
    fn policy_of_thread(name: &str) -> Option<u32> {
        for _ in 0..200 {
            for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if comm.trim_end() == name {
                    let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
                    // Fields after the parenthesised name, which may hold spaces.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    return rest.split(' ').nth(41 - 3)?.parse().ok();
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn instance_threads_run_under_sched_batch_unless_told_otherwise() {
        let mut keep = Vec::new();
        for (label, threads, policy) in [
            ("pbatch", InstanceScheduling::Batch, libc::SCHED_BATCH),
            ("pnormal", InstanceScheduling::Normal, libc::SCHED_OTHER),
        ] {
            let (gate, rx) = mpsc::channel();
            let runtime = Gated {
                io: uint8_io(),
                gate: rx,
                log: Default::default(),
                taken: None,
            };
            let config = SchedulerConfig {
                queue: QueueConfig {
                    capacity: 4,
                    levels: vec![QueuePolicy::default()],
                    default_level: 0,
                    batching: None,
                },
                preserve_ordering: false,
                threads,
            };
            let stats = Arc::new(VersionStats::new(label, 1));
            let scheduler = Scheduler::start(label, vec![Box::new(runtime)], config, stats).unwrap();
            assert_eq!(
                policy_of_thread(&format!("q-{label}-0")),
                Some(policy as u32),
                "{label}"
            );
            keep.push((scheduler, gate));
        }
    }

    fn job(id: u8, priority: usize, timeout: Option<Duration>) -> (Job, oneshot::Receiver<Result<Answer>>) {
        let (reply, rx) = oneshot::channel();
        let input = Tensor {
            name: "x".into(),
            datatype: DataType::Uint8,
            shape: vec![1, 1],
            data: vec![id].into(),
        };
        let job = Job {
            background: false,
            inputs: vec![input],
            outputs: vec!["y".into()],
            rows: 1,
            shape_key: 7,
            priority,
            timeout,
            enqueued: Instant::now(),
            reply,
        };
        (job, rx)
    }

    /// Waits until the instance has taken every queued job into a batch.
    fn until_taken(h: &Harness) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.scheduler.queued() > 0 {
            assert!(Instant::now() < deadline, "the instance never took the queued jobs");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn answer(rx: oneshot::Receiver<Result<Answer>>) -> Result<Answer> {
        rx.blocking_recv().expect("an answer")
    }

    #[test]
    fn higher_priority_runs_first() {
        let h = harness(vec![QueuePolicy::default(); 2], None, 16);
        let (a, ra) = job(1, 1, None);
        h.scheduler.submit(a).unwrap();
        until_taken(&h); // `a` now blocks the only instance
        let (b, rb) = job(2, 1, None);
        let (c, rc) = job(3, 0, None);
        h.scheduler.submit(b).unwrap();
        h.scheduler.submit(c).unwrap();
        for _ in 0..3 {
            h.gate.send(()).unwrap();
        }
        for r in [ra, rb, rc] {
            answer(r).unwrap();
        }
        assert_eq!(*h.log.lock().unwrap(), vec![vec![1], vec![3], vec![2]]);
    }

    #[test]
    fn queued_requests_are_batched_when_the_instance_frees_up() {
        let batching = BatchingConfig {
            max_batch_size: 8,
            preferred: vec![],
            max_queue_delay: Duration::ZERO,
            delay_policy: Default::default(),
        };
        let h = harness(vec![QueuePolicy::default()], Some(batching), 16);
        let (a, ra) = job(1, 0, None);
        h.scheduler.submit(a).unwrap();
        until_taken(&h);
        let rest: Vec<_> = (2..=4).map(|i| job(i, 0, None)).collect();
        let mut receivers = vec![ra];
        for (j, r) in rest {
            h.scheduler.submit(j).unwrap();
            receivers.push(r);
        }
        h.gate.send(()).unwrap();
        h.gate.send(()).unwrap();
        let answers: Vec<Answer> = receivers.into_iter().map(|r| answer(r).unwrap()).collect();
        assert_eq!(*h.log.lock().unwrap(), vec![vec![1], vec![2, 3, 4]]);
        // Each request gets its own row back.
        assert_eq!(answers[2].outputs[0].data.as_ref(), &[3]);
        assert_eq!(answers[2].outputs[0].shape, vec![1, 1]);
        assert_eq!(answers[3].batch_rows, 3);
        let stats = h.stats.snapshot("gated", 1);
        assert_eq!((stats.execution_count, stats.inference_count), (2, 4));
        assert_eq!(stats.batches[&3].count, 1);
    }

    #[test]
    fn timeout_reject_answers_deadline_exceeded_without_running() {
        let reject = QueuePolicy {
            default_timeout: Some(Duration::from_millis(1)),
            ..Default::default()
        };
        let h = harness(vec![reject], None, 16);
        let (a, ra) = job(1, 0, None);
        h.scheduler.submit(a).unwrap();
        until_taken(&h);
        let (b, rb) = job(2, 0, Some(Duration::from_millis(1)));
        h.scheduler.submit(b).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        h.gate.send(()).unwrap();
        answer(ra).unwrap();
        let e = answer(rb).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DeadlineExceeded);
        assert!(e.message.contains("past its timeout"), "{}", e.message);
        assert_eq!(*h.log.lock().unwrap(), vec![vec![1]]);
    }

    #[test]
    fn timeout_delay_moves_the_request_behind_the_others() {
        let delay = QueuePolicy {
            timeout_action: TimeoutAction::Delay,
            allow_timeout_override: true,
            ..Default::default()
        };
        let h = harness(vec![delay], None, 16);
        let (a, ra) = job(1, 0, None);
        h.scheduler.submit(a).unwrap();
        until_taken(&h);
        let timeout = h.scheduler.priority_and_timeout(None, Some(1_000)).unwrap().1;
        assert_eq!(timeout, Some(Duration::from_millis(1)));
        let (b, rb) = job(2, 0, timeout);
        h.scheduler.submit(b).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let (c, rc) = job(3, 0, None);
        h.scheduler.submit(c).unwrap();
        for _ in 0..3 {
            h.gate.send(()).unwrap();
        }
        for r in [ra, rb, rc] {
            answer(r).unwrap();
        }
        assert_eq!(*h.log.lock().unwrap(), vec![vec![1], vec![3], vec![2]]);
    }

    #[test]
    fn full_queues_refuse_at_once() {
        let limited = QueuePolicy {
            max_queue_size: 1,
            ..Default::default()
        };
        let h = harness(vec![limited, QueuePolicy::default()], None, 2);
        let (a, _ra) = job(1, 0, None);
        h.scheduler.submit(a).unwrap();
        until_taken(&h);
        let (b, _rb) = job(2, 0, None);
        h.scheduler.submit(b).unwrap();
        let e = h.scheduler.submit(job(3, 0, None).0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceExhausted);
        assert!(e.message.contains("max_queue_size 1"), "{}", e.message);
        let (c, _rc) = job(4, 1, None);
        h.scheduler.submit(c).unwrap();
        let e = h.scheduler.submit(job(5, 1, None).0).unwrap_err();
        assert!(
            e.message.contains("queue is full (2 requests waiting)"),
            "{}",
            e.message
        );
        for _ in 0..3 {
            h.gate.send(()).unwrap();
        }
    }

    #[test]
    fn requests_whose_client_left_are_dropped_and_counted() {
        let h = harness(vec![QueuePolicy::default()], None, 16);
        let (a, ra) = job(1, 0, None);
        h.scheduler.submit(a).unwrap();
        until_taken(&h);
        let (b, rb) = job(2, 0, None);
        h.scheduler.submit(b).unwrap();
        drop(rb);
        let (c, rc) = job(3, 0, None);
        h.scheduler.submit(c).unwrap();
        h.gate.send(()).unwrap();
        h.gate.send(()).unwrap();
        answer(ra).unwrap();
        answer(rc).unwrap();
        assert_eq!(*h.log.lock().unwrap(), vec![vec![1], vec![3]]);
        assert_eq!(h.stats.cancelled.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn priority_and_timeout_parameters_are_checked() {
        let levels = vec![
            QueuePolicy {
                default_timeout: Some(Duration::from_millis(5)),
                ..Default::default()
            };
            3
        ];
        let h = harness(levels, None, 4);
        assert_eq!(
            h.scheduler.priority_and_timeout(Some(2), None).unwrap(),
            (1, Some(Duration::from_millis(5)))
        );
        assert_eq!(h.scheduler.priority_and_timeout(Some(0), None).unwrap().0, 0);
        assert!(
            h.scheduler
                .priority_and_timeout(Some(4), None)
                .unwrap_err()
                .message
                .contains("levels 1..=3")
        );
        assert!(
            h.scheduler
                .priority_and_timeout(None, Some(-1))
                .unwrap_err()
                .message
                .contains("'timeout'")
        );
        // Overrides are ignored unless the policy allows them.
        assert_eq!(
            h.scheduler.priority_and_timeout(None, Some(1)).unwrap().1,
            Some(Duration::from_millis(5))
        );
    }

    #[test]
    fn preserve_ordering_answers_in_queue_order_across_instances() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let taken = Arc::new(Mutex::new(Vec::new()));
        let io = uint8_io();
        let mut gates = Vec::new();
        let mut runtimes: Vec<Box<dyn Runtime>> = Vec::new();
        for instance in 0..2 {
            let (gate, rx) = mpsc::channel();
            gates.push(gate);
            let taken = Some((instance, Arc::clone(&taken)));
            runtimes.push(Box::new(Gated {
                io: io.clone(),
                gate: rx,
                log: Arc::clone(&log),
                taken,
            }));
        }
        let config = SchedulerConfig {
            queue: QueueConfig {
                capacity: 8,
                levels: vec![QueuePolicy::default()],
                default_level: 0,
                batching: None,
            },
            preserve_ordering: true,
            threads: InstanceScheduling::default(),
        };
        let stats = Arc::new(VersionStats::new("ordered", 1));
        let scheduler = Scheduler::start("ordered", runtimes, config, stats).unwrap();
        let (first, r1) = job(1, 0, None);
        let (second, mut r2) = job(2, 0, None);
        scheduler.submit(first).unwrap();
        scheduler.submit(second).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while taken.lock().unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "both instances should have taken a job");
            std::thread::sleep(Duration::from_millis(1));
        }
        let holder_of = |id: u8| taken.lock().unwrap().iter().find(|(_, j)| *j == id).unwrap().0;
        // Let the second request finish first: its answer must wait for the first's.
        gates[holder_of(2)].send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            r2.try_recv().is_err(),
            "the second request was answered before the first"
        );
        // The instance that finished early parked its answer and is free:
        // it takes the third request while the first still runs.
        let (third, mut r3) = job(3, 0, None);
        scheduler.submit(third).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while taken.lock().unwrap().len() < 3 {
            assert!(Instant::now() < deadline, "the early instance stayed blocked");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(holder_of(3), holder_of(2));
        gates[holder_of(3)].send(()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            r3.try_recv().is_err(),
            "the third request was answered before the first"
        );
        assert_eq!(reorder_parked(&scheduler), 2);
        gates[holder_of(1)].send(()).unwrap();
        assert_eq!(r1.blocking_recv().unwrap().unwrap().outputs[0].data.as_ref(), &[1]);
        assert_eq!(r2.blocking_recv().unwrap().unwrap().outputs[0].data.as_ref(), &[2]);
        assert_eq!(r3.blocking_recv().unwrap().unwrap().outputs[0].data.as_ref(), &[3]);
        assert_eq!(reorder_parked(&scheduler), 0);
    }

    fn reorder_parked(s: &Scheduler) -> usize {
        s.reorder.as_ref().map_or(0, |r| r.parked())
    }

    /// Fails any run that holds a request whose id (first byte) is 13.
    struct FailsOn13 {
        io: ModelIo,
    }

    impl Runtime for FailsOn13 {
        fn io(&self) -> &ModelIo {
            &self.io
        }
        fn run(&mut self, inputs: &[InputBatch<'_>], _: &[String]) -> std::result::Result<Vec<Tensor>, RuntimeError> {
            if inputs[0].parts.iter().any(|p| p[0] == 13) {
                return Err(RuntimeError::Execution("request 13 is poison".into()));
            }
            Ok(vec![Tensor {
                name: "y".into(),
                datatype: DataType::Uint8,
                shape: inputs[0].shape.clone(),
                data: inputs[0].parts.concat().into(),
            }])
        }
    }

    #[test]
    fn a_failed_batch_is_retried_one_by_one_so_only_the_bad_request_fails() {
        let io = uint8_io();
        let config = SchedulerConfig {
            queue: QueueConfig {
                capacity: 16,
                levels: vec![QueuePolicy::default()],
                default_level: 0,
                // Runs only once all four are queued.
                batching: Some(BatchingConfig {
                    max_batch_size: 4,
                    preferred: vec![4],
                    max_queue_delay: Duration::from_secs(30),
                    delay_policy: Default::default(),
                }),
            },
            preserve_ordering: false,
            threads: InstanceScheduling::default(),
        };
        let stats = Arc::new(VersionStats::new("poison", 1));
        let scheduler = Scheduler::start("poison", vec![Box::new(FailsOn13 { io })], config, stats).unwrap();
        let receivers: Vec<_> = [11u8, 12, 13, 14]
            .into_iter()
            .map(|id| {
                let (j, r) = job(id, 0, None);
                scheduler.submit(j).unwrap();
                r
            })
            .collect();
        let answers: Vec<_> = receivers.into_iter().map(answer).collect();
        for (id, a) in [11u8, 12, 13, 14].iter().zip(&answers) {
            match a {
                Ok(a) => assert_eq!(a.outputs[0].data.as_ref(), &[*id]),
                Err(e) => {
                    assert_eq!(*id, 13, "request {id} failed: {}", e.message);
                    assert!(e.message.contains("poison"), "{}", e.message);
                }
            }
        }
        assert_eq!(answers.iter().filter(|a| a.is_err()).count(), 1);
    }

    /// Panics on its first run, then echoes.
    struct PanicsOnce {
        io: ModelIo,
        panicked: bool,
    }

    impl Runtime for PanicsOnce {
        fn io(&self) -> &ModelIo {
            &self.io
        }
        fn run(&mut self, inputs: &[InputBatch<'_>], _: &[String]) -> std::result::Result<Vec<Tensor>, RuntimeError> {
            if !self.panicked {
                self.panicked = true;
                panic!("runtime bug");
            }
            let data: Vec<u8> = inputs[0].parts.concat();
            Ok(vec![Tensor {
                name: "y".into(),
                datatype: DataType::Uint8,
                shape: inputs[0].shape.clone(),
                data: data.into(),
            }])
        }
    }

    #[test]
    fn a_panicking_runtime_fails_the_batch_and_the_instance_serves_on() {
        let io = uint8_io();
        let config = SchedulerConfig {
            queue: QueueConfig {
                capacity: 8,
                levels: vec![QueuePolicy::default()],
                default_level: 0,
                batching: None,
            },
            preserve_ordering: true,
            threads: InstanceScheduling::default(),
        };
        let stats = Arc::new(VersionStats::new("panicky", 1));
        let runtime = PanicsOnce { io, panicked: false };
        let scheduler = Scheduler::start("panicky", vec![Box::new(runtime)], config, stats).unwrap();
        let (first, r1) = job(1, 0, None);
        scheduler.submit(first).unwrap();
        let e = answer(r1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("panicked"), "{}", e.message);
        let (second, r2) = job(2, 0, None);
        scheduler.submit(second).unwrap();
        assert_eq!(answer(r2).unwrap().outputs[0].data.as_ref(), &[2]);
    }
}
