//! Leader election on the test kit's API server: two candidates in one test,
//! handovers on graceful stop and on a vanished leader, API faults during
//! renewal, and the work of the candidates never overlapping.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use meshmirror::leader::{Ended, Leadership, LeaseConfig, StopSignal};
use meshmirror_testkit::{ApiServer, Injected, Match, Verb};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const NAMESPACE: &str = "default";
const LEASE: &str = "meshmirror";
/// Generous: the machine may be busy; assertions on order never depend on it.
const PATIENCE: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_millis(100);
/// How long the work takes to wind down once told to stop (a pass in flight).
const WIND_DOWN: Duration = Duration::from_millis(300);

fn config(identity: &str, lease_duration: Duration) -> LeaseConfig {
    LeaseConfig {
        namespace: NAMESPACE.into(),
        name: LEASE.into(),
        identity: identity.into(),
        lease_duration,
        renew_deadline: lease_duration / 2,
        retry_period: RETRY,
    }
}

/// When each candidate's work ran.
#[derive(Clone, Default)]
struct WorkLog(Arc<Mutex<Vec<Span>>>);

#[derive(Clone, Debug)]
struct Span {
    who: String,
    start: Instant,
    end: Option<Instant>,
}

/// Closes its span when the work ends, also when it is dropped mid-way.
struct Running {
    log: WorkLog,
    index: usize,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.log.0.lock().unwrap()[self.index].end = Some(Instant::now());
    }
}

impl WorkLog {
    fn open(&self, who: &str) -> Running {
        let mut spans = self.0.lock().unwrap();
        spans.push(Span {
            who: who.into(),
            start: Instant::now(),
            end: None,
        });
        Running {
            log: self.clone(),
            index: spans.len() - 1,
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }

    /// Every span but the last is closed before the next one opens.
    fn assert_disjoint(&self) {
        let mut spans = self.spans();
        spans.sort_by_key(|s| s.start);
        for pair in spans.windows(2) {
            let end = pair[0].end.unwrap_or_else(|| {
                panic!("{} still runs while {} started", pair[0].who, pair[1].who)
            });
            assert!(
                end <= pair[1].start,
                "work overlapped: {} ran until {:?} after {} started: {spans:#?}",
                pair[0].who,
                end - pair[1].start,
                pair[1].who
            );
        }
    }

    fn who(&self) -> Vec<String> {
        self.spans().into_iter().map(|s| s.who).collect()
    }
}

/// The controller's shape: run until told to stop, then finish the pass in flight.
fn work(
    log: WorkLog,
    who: String,
) -> impl FnMut(StopSignal) -> futures::future::BoxFuture<'static, ()> {
    move |stop: StopSignal| {
        let log = log.clone();
        let who = who.clone();
        Box::pin(async move {
            let _running = log.open(&who);
            stop.stopped().await;
            tokio::time::sleep(WIND_DOWN).await;
        })
    }
}

struct Candidate {
    leading: watch::Receiver<bool>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Ended>,
}

impl Candidate {
    fn start(
        client: &Client,
        config: LeaseConfig,
        log: &WorkLog,
        gauge: Option<Gauge>,
    ) -> Candidate {
        let who = config.identity.clone();
        let mut leadership = Leadership::new(client.clone(), config).expect("valid config");
        if let Some(gauge) = gauge {
            leadership = leadership.with_gauge(gauge);
        }
        let leading = leadership.subscribe();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(leadership.run(
            async {
                let _ = rx.await;
            },
            work(log.clone(), who),
        ));
        Candidate {
            leading,
            shutdown: Some(tx),
            task,
        }
    }

    fn leads(&self) -> bool {
        *self.leading.borrow()
    }

    /// SIGTERM: stop the work, release the lease, return.
    async fn stop(mut self) -> Ended {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the candidate stops in time")
            .expect("the candidate's task does not panic")
    }

    /// A crash: nothing is released.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < PATIENCE,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn lease(client: &Client) -> Lease {
    Api::<Lease>::namespaced(client.clone(), NAMESPACE)
        .get(LEASE)
        .await
        .expect("the lease exists")
}

fn holder(lease: &Lease) -> String {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(-1)
}

async fn server() -> ApiServer {
    ApiServer::start()
        .await
        .expect("test kit API server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_two_candidates_leads_and_the_lease_says_who() {
    let server = server().await;
    let client = server.client();
    let log = WorkLog::default();
    let a = Candidate::start(&client, config("a", Duration::from_secs(2)), &log, None);
    let b = Candidate::start(&client, config("b", Duration::from_secs(2)), &log, None);
    wait_for("a leader", || a.leads() || b.leads()).await;
    let leader = if a.leads() { "a" } else { "b" };

    // Many renewals later, still the one leader and one span of work.
    let first = lease(&client).await;
    for _ in 0..15 {
        tokio::time::sleep(RETRY).await;
        assert!(a.leads() ^ b.leads(), "exactly one leads at any time");
    }
    let later = lease(&client).await;
    assert_eq!(holder(&later), leader);
    assert_eq!(log.who(), vec![leader.to_string()]);
    let (s1, s2) = (first.spec.unwrap(), later.spec.clone().unwrap());
    assert_eq!(s2.lease_duration_seconds, Some(2));
    assert_eq!(
        s2.lease_transitions,
        Some(0),
        "created by the leader: no transition yet"
    );
    assert_eq!(
        s1.acquire_time, s2.acquire_time,
        "renewals keep the acquire time"
    );
    assert!(
        s2.renew_time.unwrap().0 > s1.renew_time.unwrap().0,
        "the leader renews"
    );
    assert!(
        server.requests().get(Verb::Update, "leases") >= 5,
        "renewals are updates: {:?}",
        server.requests().entries()
    );

    assert_eq!(a.stop().await, Ended::Shutdown);
    assert_eq!(b.stop().await, Ended::Shutdown);
    log.assert_disjoint();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_hands_over_at_once() {
    let server = server().await;
    let client = server.client();
    let log = WorkLog::default();
    // A long lease: a handover before it could expire proves the release.
    let lease_duration = Duration::from_secs(10);
    let a = Candidate::start(&client, config("a", lease_duration), &log, None);
    wait_for("a leads", || a.leads()).await;
    let b = Candidate::start(&client, config("b", lease_duration), &log, None);
    tokio::time::sleep(RETRY * 3).await;
    assert!(!b.leads(), "the standby waits while the leader renews");

    let stopped = Instant::now();
    assert_eq!(a.stop().await, Ended::Shutdown);
    // The work wound down before the lease was given up.
    let a_span = log.spans()[0].clone();
    assert!(a_span.end.unwrap() - a_span.start >= WIND_DOWN);
    wait_for("b takes over", || b.leads()).await;
    let took = stopped.elapsed();
    assert!(
        took < lease_duration,
        "took {took:?}: the standby waited for expiry instead of taking the released lease"
    );

    let l = lease(&client).await;
    assert_eq!(holder(&l), "b");
    assert_eq!(transitions(&l), 1);
    assert_eq!(l.spec.unwrap().lease_duration_seconds, Some(10));
    assert_eq!(log.who(), vec!["a", "b"]);
    log.assert_disjoint();
    assert_eq!(b.stop().await, Ended::Shutdown);
    // The last one out leaves the lease free.
    assert_eq!(holder(&lease(&client).await), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_leader_is_replaced_after_the_lease_duration() {
    let server = server().await;
    let client = server.client();
    let log = WorkLog::default();
    let lease_duration = Duration::from_secs(2);
    let a = Candidate::start(&client, config("a", lease_duration), &log, None);
    wait_for("a leads", || a.leads()).await;
    let b = Candidate::start(&client, config("b", lease_duration), &log, None);
    tokio::time::sleep(RETRY * 3).await;

    let killed = Instant::now();
    a.kill().await;
    assert_eq!(
        holder(&lease(&client).await),
        "a",
        "a crash releases nothing"
    );
    wait_for("b takes over", || b.leads()).await;
    let took = killed.elapsed();
    // The last renewal was at most one retry period before the crash, and the
    // standby counts the lease duration from when it saw that renewal.
    assert!(
        took >= lease_duration - RETRY * 3,
        "took over after {took:?}, before the lease of the silent holder ran out"
    );

    let l = lease(&client).await;
    assert_eq!(holder(&l), "b");
    assert_eq!(transitions(&l), 1);
    assert_eq!(log.who(), vec!["a", "b"]);
    log.assert_disjoint();
    assert_eq!(b.stop().await, Ended::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_never_overlaps_across_handovers() {
    let server = server().await;
    let client = server.client();
    let log = WorkLog::default();
    let lease_duration = Duration::from_secs(2);
    let mut candidates: Vec<(String, Candidate)> = Vec::new();
    for name in ["c0", "c1"] {
        let c = Candidate::start(&client, config(name, lease_duration), &log, None);
        candidates.push((name.to_string(), c));
    }
    // Each round: the leader goes (gracefully, or by crashing), a new
    // candidate joins, somebody else takes over.
    let rounds = ["stop", "kill", "stop", "stop", "kill"];
    for (round, how) in rounds.iter().enumerate() {
        wait_for("a leader", || candidates.iter().any(|(_, c)| c.leads())).await;
        let i = candidates.iter().position(|(_, c)| c.leads()).unwrap();
        let (name, leader) = candidates.remove(i);
        let spans_before = log.spans().len();
        match *how {
            "stop" => assert_eq!(leader.stop().await, Ended::Shutdown),
            _ => leader.kill().await,
        }
        let next = format!("c{}", round + 2);
        let c = Candidate::start(&client, config(&next, lease_duration), &log, None);
        candidates.push((next, c));
        wait_for("the next leader's work", || {
            log.spans().len() > spans_before
        })
        .await;
        assert_ne!(
            log.who().last().unwrap(),
            &name,
            "the leader that left came back"
        );
    }
    for (_, c) in candidates {
        c.stop().await;
    }
    assert_eq!(log.spans().len(), rounds.len() + 1, "{:?}", log.who());
    log.assert_disjoint();
    assert_eq!(transitions(&lease(&client).await), rounds.len() as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_renewals_stop_the_work_before_anyone_takes_over_and_leadership_returns() {
    let server = server().await;
    let client = server.client();
    let log = WorkLog::default();
    let lease_duration = Duration::from_secs(2);
    let gauge = Gauge::default();
    let a = Candidate::start(
        &client,
        config("a", lease_duration),
        &log,
        Some(gauge.clone()),
    );
    wait_for("a leads", || a.leads()).await;
    assert_eq!(gauge.get(), 1);
    let b = Candidate::start(&client, config("b", lease_duration), &log, None);
    tokio::time::sleep(RETRY * 3).await;

    // Every lease write fails: the leader can no longer renew.
    server.faults().fail_next(
        Match::any().verb(Verb::Update).resource("leases"),
        u32::MAX,
        Injected::Unavailable,
    );
    let faulted = Instant::now();
    wait_for("a gives up leading", || !a.leads()).await;
    let gave_up = faulted.elapsed();
    assert!(
        gave_up < lease_duration + WIND_DOWN,
        "a led for {gave_up:?} without renewing; a standby may take over after {lease_duration:?}"
    );
    assert_eq!(gauge.get(), 0);
    assert!(
        !b.leads(),
        "nobody can write the lease while the faults last"
    );
    let a_span = log.spans()[0].clone();
    assert!(
        a_span.end.is_some(),
        "a's work ended when it stopped leading"
    );

    server.faults().clear();
    wait_for("a leader again", || a.leads() || b.leads()).await;
    assert!(a.leads() ^ b.leads());
    if a.leads() {
        assert_eq!(gauge.get(), 1);
    }
    assert_eq!(log.spans().len(), 2, "{:?}", log.who());
    log.assert_disjoint();
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_that_ends_by_itself_releases_the_lease() {
    let server = server().await;
    let client = server.client();
    let leadership =
        Leadership::new(client.clone(), config("solo", Duration::from_secs(5))).expect("valid");
    let ended = tokio::time::timeout(
        PATIENCE,
        leadership.run(std::future::pending::<()>(), |_stop| async {}),
    )
    .await
    .expect("run returns");
    assert_eq!(ended, Ended::WorkEnded);
    let spec = lease(&client).await.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(""));
    assert_eq!(spec.lease_duration_seconds, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_shut_down_leaves_the_lease_alone() {
    let server = server().await;
    let client = server.client();
    let log = WorkLog::default();
    let a = Candidate::start(&client, config("a", Duration::from_secs(5)), &log, None);
    wait_for("a leads", || a.leads()).await;
    let b = Candidate::start(&client, config("b", Duration::from_secs(5)), &log, None);
    tokio::time::sleep(RETRY * 3).await;
    assert_eq!(b.stop().await, Ended::Shutdown);
    assert_eq!(holder(&lease(&client).await), "a");
    assert!(a.leads());
    assert_eq!(log.who(), vec!["a"]);
    a.stop().await;
}
