//! Leader election on the test kit's API server: two candidates in one test,
//! handovers on graceful stop and on a vanished leader, API faults during
//! renewal, and the work of the candidates never overlapping. The tests judge
//! by records (every version of the Lease from a watch, when each candidate's
//! work ran, each candidate's requests), not by sampling who leads now and
//! then: on a busy machine samples miss things and timings stretch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use meshmirror::leader::{Ended, Leadership, LeaseConfig, StopSignal};
use meshmirror_testkit::{ApiServer, Injected, Match, TestKube, Verb};
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
    /// `end` on the wall clock, to compare with the lease's timestamps.
    end_wall: Option<SystemTime>,
}

/// Closes its span when the work ends, also when it is dropped mid-way.
struct Running {
    log: WorkLog,
    index: usize,
}

impl Drop for Running {
    fn drop(&mut self) {
        let span = &mut self.log.0.lock().unwrap()[self.index];
        span.end = Some(Instant::now());
        span.end_wall = Some(SystemTime::now());
    }
}

impl WorkLog {
    fn open(&self, who: &str) -> Running {
        let mut spans = self.0.lock().unwrap();
        spans.push(Span {
            who: who.into(),
            start: Instant::now(),
            end: None,
            end_wall: None,
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

/// One version of the lease, and when this test received it. The wall clock
/// is the one the candidates stamp `renewTime` and `acquireTime` with (they
/// run in this process), so the two compare.
#[derive(Clone, Debug)]
struct Record {
    holder: String,
    duration: Duration,
    acquire: Option<Timestamp>,
    renew: Option<Timestamp>,
    transitions: i32,
    received: Timestamp,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.unwrap_or_default(),
            duration: Duration::from_secs(
                spec.lease_duration_seconds
                    .unwrap_or(0)
                    .max(0)
                    .unsigned_abs()
                    .into(),
            ),
            acquire: spec.acquire_time.map(|t| t.0),
            renew: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
            received: Timestamp::now(),
        }
    }
}

/// Every version of the lease, in order, as a watch delivers them (the test
/// kit's watch loses none while it is not cut).
struct LeaseLog {
    records: Arc<Mutex<Vec<Record>>>,
    task: JoinHandle<()>,
}

impl Drop for LeaseLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LeaseLog {
    /// Returns once the watch is established, so no later version is missed.
    async fn start(client: &Client) -> LeaseLog {
        let records: Arc<Mutex<Vec<Record>>> = Arc::default();
        let listed = Arc::new(AtomicBool::new(false));
        let api = Api::<Lease>::namespaced(client.clone(), NAMESPACE);
        let (sink, ready) = (records.clone(), listed.clone());
        let task = tokio::spawn(async move {
            let mut last = 0u64;
            // With backoff: a watch that fails at once (a dropped connection
            // on a loaded machine) must not spin and starve the runtime.
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                let lease = match event {
                    Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => l,
                    Ok(watcher::Event::InitDone) => {
                        ready.store(true, Ordering::SeqCst);
                        continue;
                    }
                    _ => continue,
                };
                let rv = lease
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                // A relist repeats the current version.
                if lease.metadata.name.as_deref() != Some(LEASE) || rv <= last {
                    continue;
                }
                last = rv;
                sink.lock().unwrap().push(Record::of(&lease));
            }
        });
        wait_for("the lease watch", || listed.load(Ordering::SeqCst)).await;
        LeaseLog { records, task }
    }

    fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// Waits until the log has seen `who` hold the lease: a candidate knows
    /// it leads when its write is answered, the watch hears of it after.
    async fn wait_holder(&self, who: &str) {
        wait_for(&format!("the lease log to see {who} hold"), || {
            self.records().iter().any(|r| r.holder == who)
        })
        .await;
    }

    /// Every change of holder is counted in `leaseTransitions` and is either
    /// a take-up of a released lease or a takeover from a silent holder that
    /// came only once the holder's last renewal was `leaseDurationSeconds`
    /// old. (The taker waits that long after it first saw the renewal, which
    /// was after the renewal was stamped, and this test receives the takeover
    /// after it was written: so this holds however slow the machine is.)
    fn assert_handovers(&self) {
        let records = self.records();
        for pair in records.windows(2) {
            let (prev, next) = (&pair[0], &pair[1]);
            if next.holder == prev.holder || next.holder.is_empty() {
                assert_eq!(
                    next.transitions, prev.transitions,
                    "a renewal or a release is no transition: {records:#?}"
                );
                continue;
            }
            assert_eq!(
                next.transitions,
                prev.transitions + 1,
                "{} took over from {:?} uncounted: {records:#?}",
                next.holder,
                prev.holder
            );
            if prev.holder.is_empty() {
                continue;
            }
            let renewed = prev.renew.expect("a held lease has a renewTime");
            let expired = renewed + SignedDuration::try_from(prev.duration).unwrap();
            assert!(
                next.received >= expired,
                "{} took over from {} {:?} after its last renewal, before its {:?} lease ran out: {records:#?}",
                next.holder,
                prev.holder,
                next.received.duration_since(renewed),
                prev.duration
            );
        }
    }
}

/// The client of candidate `who`: the server counts its requests apart.
fn client_of(server: &TestKube, who: &str) -> Client {
    server.client_as(&format!("candidate-{who}"))
}

/// How many times candidate `who` has read the lease: one per attempt.
fn reads_by(server: &TestKube, who: &str) -> u64 {
    server
        .requests_from(&format!("candidate-{who}"))
        .get(Verb::Get, "leases")
}

/// Instead of sleeping while a standby "warms up": it has tried for the
/// lease a few times (and seen it held) once it has read it that often.
async fn wait_standby_tries(server: &TestKube, who: &str) {
    let from = reads_by(server, who);
    wait_for("the standby's attempts", || {
        reads_by(server, who) >= from + 3
    })
    .await;
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

async fn server() -> TestKube {
    TestKube::start(async || {
        ApiServer::start()
            .await
            .expect("test kit API server starts")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_two_candidates_leads_and_the_lease_says_who() {
    let server = server().await;
    let client = server.client();
    let history = LeaseLog::start(&client).await;
    let log = WorkLog::default();
    // A lease long enough that a busy machine's stalls (the holder gives up
    // after half of it without a renewal) do not end the term mid-test.
    let lease_duration = Duration::from_secs(10);
    let a = Candidate::start(
        &client_of(&server, "a"),
        config("a", lease_duration),
        &log,
        None,
    );
    let b = Candidate::start(
        &client_of(&server, "b"),
        config("b", lease_duration),
        &log,
        None,
    );
    wait_for("a leader", || a.leads() || b.leads()).await;
    let leader = if a.leads() { "a" } else { "b" };
    let standby = if leader == "a" { "b" } else { "a" };

    // Many renewals later (each one a version of the lease, every one of
    // them on record), still the one holder and one span of work, and the
    // standby tried all along.
    wait_for("15 versions of the lease", || history.len() >= 15).await;
    wait_standby_tries(&server, standby).await;
    let records = history.records();
    assert!(
        records.iter().all(|r| r.holder == leader),
        "only {leader} ever held the lease: {records:#?}"
    );
    assert!(
        records.iter().all(|r| r.transitions == 0),
        "created by the leader: no transition: {records:#?}"
    );
    assert!(
        records.iter().all(|r| r.acquire == records[0].acquire),
        "renewals keep the acquire time: {records:#?}"
    );
    assert!(
        records.windows(2).all(|p| p[1].renew > p[0].renew),
        "every version is a renewal: {records:#?}"
    );
    assert!(a.leads() ^ b.leads(), "exactly one leads");
    let later = lease(&client).await;
    assert_eq!(holder(&later), leader);
    assert_eq!(log.who(), vec![leader.to_string()]);
    assert_eq!(later.spec.unwrap().lease_duration_seconds, Some(10));
    assert!(
        server.requests().get(Verb::Update, "leases") >= 5,
        "renewals are updates: {:?}",
        server.requests().entries()
    );

    assert_eq!(a.stop().await, Ended::Shutdown);
    assert_eq!(b.stop().await, Ended::Shutdown);
    log.assert_disjoint();
    history.assert_handovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_hands_over_at_once() {
    let server = server().await;
    let client = server.client();
    let history = LeaseLog::start(&client).await;
    let log = WorkLog::default();
    // A long lease: a handover before it could expire proves the release.
    let lease_duration = Duration::from_secs(10);
    let a = Candidate::start(
        &client_of(&server, "a"),
        config("a", lease_duration),
        &log,
        None,
    );
    wait_for("a leads", || a.leads()).await;
    let b = Candidate::start(
        &client_of(&server, "b"),
        config("b", lease_duration),
        &log,
        None,
    );
    wait_standby_tries(&server, "b").await;
    assert!(!b.leads(), "the standby waits while the leader renews");
    assert!(history.records().iter().all(|r| r.holder == "a"));

    let stopped = Instant::now();
    assert_eq!(a.stop().await, Ended::Shutdown);
    // The work wound down before the lease was given up.
    let a_span = log.spans()[0].clone();
    assert!(a_span.end.unwrap() - a_span.start >= WIND_DOWN);
    wait_for("b takes over", || b.leads()).await;
    history.wait_holder("b").await;
    // The record shows the release, and b taking the released lease.
    let records = history.records();
    let taken = records
        .iter()
        .position(|r| r.holder == "b")
        .expect("b's version of the lease");
    assert_eq!(
        records[taken - 1].holder,
        "",
        "a released the lease, then b took it: {records:#?}"
    );
    assert!(records[..taken - 1].iter().all(|r| r.holder == "a"));
    // And at once: b did not wait out a's 10 s lease. The handover takes
    // a's wind-down (300 ms) and about one retry period (100 ms); the bound
    // is over 20 times that, so a busy machine keeps it.
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
    history.assert_handovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_leader_is_replaced_after_the_lease_duration() {
    let server = server().await;
    let client = server.client();
    let history = LeaseLog::start(&client).await;
    let log = WorkLog::default();
    let lease_duration = Duration::from_secs(2);
    let a = Candidate::start(
        &client_of(&server, "a"),
        config("a", lease_duration),
        &log,
        None,
    );
    wait_for("a leads", || a.leads()).await;
    let b = Candidate::start(
        &client_of(&server, "b"),
        config("b", lease_duration),
        &log,
        None,
    );
    wait_standby_tries(&server, "b").await;

    a.kill().await;
    assert_eq!(
        holder(&lease(&client).await),
        "a",
        "a crash releases nothing"
    );
    wait_for("b takes over", || b.leads()).await;
    history.wait_holder("b").await;
    // Not timed from the kill (a's last renewal may be older than that on a
    // busy machine): the record shows b's version right after a's last
    // renewal, with no release between, and b's came only once that renewal
    // was the lease duration old.
    let records = history.records();
    let taken = records
        .iter()
        .position(|r| r.holder == "b")
        .expect("b's version of the lease");
    assert!(
        records[..taken].iter().all(|r| r.holder == "a"),
        "nothing released: {records:#?}"
    );
    history.assert_handovers();

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
    let history = LeaseLog::start(&client).await;
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
    history.assert_handovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_renewals_stop_the_work_before_anyone_takes_over_and_leadership_returns() {
    let server = server().await;
    let client = server.client();
    let log = WorkLog::default();
    // The holder gives up 1 s after its last renewal; a standby may take
    // over 6 s after it: room for a busy machine's delays in between.
    let lease_duration = Duration::from_secs(6);
    let config = |who: &str| LeaseConfig {
        renew_deadline: Duration::from_secs(1),
        ..config(who, lease_duration)
    };
    let gauge = Gauge::default();
    let a = Candidate::start(
        &client_of(&server, "a"),
        config("a"),
        &log,
        Some(gauge.clone()),
    );
    wait_for("a leads", || a.leads()).await;
    assert_eq!(gauge.get(), 1);
    let b = Candidate::start(&client_of(&server, "b"), config("b"), &log, None);
    wait_standby_tries(&server, "b").await;

    // Every lease write fails: the leader can no longer renew.
    server.faults().fail_next(
        Match::any().verb(Verb::Update).resource("leases"),
        u32::MAX,
        Injected::Unavailable,
    );
    wait_for("a gives up leading", || !a.leads()).await;
    // By the record, not by a stopwatch: a's work ended before its last
    // renewal (the lease cannot change while the faults last) was the lease
    // duration old, which is the earliest a standby may take over.
    let last = lease(&client).await.spec.unwrap();
    assert_eq!(last.holder_identity.as_deref(), Some("a"));
    let renewed = last.renew_time.unwrap().0;
    let ended = Timestamp::try_from(log.spans()[0].end_wall.expect("a's work ended")).unwrap();
    assert!(
        ended < renewed + SignedDuration::try_from(lease_duration).unwrap(),
        "a's work ran {:?} past its last renewal; a standby may take over after {lease_duration:?}",
        ended.duration_since(renewed)
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
    let a = Candidate::start(
        &client_of(&server, "a"),
        config("a", Duration::from_secs(5)),
        &log,
        None,
    );
    wait_for("a leads", || a.leads()).await;
    let b = Candidate::start(
        &client_of(&server, "b"),
        config("b", Duration::from_secs(5)),
        &log,
        None,
    );
    wait_standby_tries(&server, "b").await;
    assert_eq!(b.stop().await, Ended::Shutdown);
    assert_eq!(holder(&lease(&client).await), "a");
    assert!(a.leads());
    assert_eq!(log.who(), vec!["a"]);
    a.stop().await;
}
