//! The scheduler's state machine, driven through a fake [`Pusher`] whose answers each test
//! decides, on tokio's paused clock: backoff delays are measured in virtual time, and nothing
//! waits on the wall clock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::{Instant, timeout};

use super::mirror_push::When;
use super::push_error::{Blame, PushError};
use super::pusher::{Confirmed, Pusher};
use super::queue::{Backoff, Queue};
use super::report::Delivered;
use super::scheduler::{ATTEMPTS_AT_ONCE, Checked, Outcome, Scheduler};
use crate::config::MirrorConfig;
use crate::names::{AccountName, RepoName};

/// One call of the fake pusher, as the test sees it start.
#[derive(Debug)]
struct Call {
    repo: RepoName,
    when: When,
    at: Instant,
}

/// What the fake pusher answers the next push with.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Refuse,
    Unreachable,
}

/// A pusher that reports each call, holds it until the test lets it through (`gate`), and
/// answers from a script (success once the script is empty).
struct FakePusher {
    gate: Semaphore,
    script: Mutex<VecDeque<Answer>>,
    calls: mpsc::UnboundedSender<Call>,
    reachable: AtomicBool,
    resets: AtomicUsize,
    probes: AtomicUsize,
    pushed: AtomicUsize,
    /// What `quick_state` says the repo's files fingerprint to.
    on_disk: Mutex<Option<String>>,
}

impl FakePusher {
    fn new(open: bool) -> (Arc<Self>, mpsc::UnboundedReceiver<Call>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let fake = Arc::new(FakePusher {
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
            script: Mutex::new(VecDeque::new()),
            calls: tx,
            reachable: AtomicBool::new(false),
            resets: AtomicUsize::new(0),
            probes: AtomicUsize::new(0),
            pushed: AtomicUsize::new(0),
            on_disk: Mutex::new(None),
        });
        (fake, rx)
    }

    fn answer(&self, answers: &[Answer]) {
        self.script.lock().unwrap().extend(answers.iter().copied());
    }

    /// Lets `n` held pushes finish.
    fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

impl Pusher for FakePusher {
    fn push<'a>(
        &'a self,
        repo: &'a RepoName,
        _slave: &'a AccountName,
        when: When,
        _confirmed: Option<String>,
    ) -> BoxFuture<'a, Result<Option<Confirmed>, PushError>> {
        Box::pin(async move {
            let _ = self.calls.send(Call {
                repo: repo.clone(),
                when,
                at: Instant::now(),
            });
            self.gate.acquire().await.expect("gate open").forget();
            let answer = self.script.lock().unwrap().pop_front();
            match answer {
                Some(Answer::Refuse) => Err(PushError::Refused("no".into())),
                Some(Answer::Unreachable) => Err(PushError::Transport("connection lost".into())),
                None => {
                    let n = self.pushed.fetch_add(1, Ordering::SeqCst);
                    Ok(Some(Confirmed {
                        // A sweep's check finds nothing changed and asks nobody.
                        contacted: when != When::IfChanged,
                        fingerprint: format!("f{n}"),
                        diverged: None,
                        bytes: 0,
                    }))
                }
            }
        })
    }

    fn quick_state(&self, _repo: &RepoName) -> Option<(Vec<AccountName>, Option<String>)> {
        let slave = AccountName::parse("server2").unwrap();
        Some((vec![slave], self.on_disk.lock().unwrap().clone()))
    }

    fn reachable<'a>(&'a self, _peer: &'a AccountName) -> BoxFuture<'a, bool> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { self.reachable.load(Ordering::SeqCst) })
    }

    fn reset(&self, _peer: &AccountName) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }

    fn forget_failure(&self, _peer: &AccountName) {}

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

struct World {
    scheduler: Arc<Scheduler>,
    fake: Arc<FakePusher>,
    calls: mpsc::UnboundedReceiver<Call>,
    queue: Queue,
    dir: tempfile::TempDir,
    slave: AccountName,
}

/// A scheduler over a fresh queue. Backoff: 1 s, doubling, at most 8 s.
fn world(open: bool) -> World {
    world_with(open, 1.0)
}

fn world_with(open: bool, retry_initial_secs: f64) -> World {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::new(dir.path().join("queue"));
    let backoff = Backoff::from_config(&MirrorConfig {
        retry_initial_secs,
        retry_max_secs: retry_initial_secs * 8.0,
        retry_factor: 2.0,
        ..MirrorConfig::default()
    });
    let (fake, calls) = FakePusher::new(open);
    let scheduler = Scheduler::new(queue.clone(), backoff, fake.clone());
    World {
        scheduler,
        fake,
        calls,
        queue,
        dir,
        slave: AccountName::parse("server2").unwrap(),
    }
}

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

/// Bounds every wait in virtual time: a scheduler that forgot work fails the test instead of
/// hanging it.
const LONG: Duration = Duration::from_secs(3600);

impl World {
    /// What the post-receive hook does: record the push durably, then tell the scheduler.
    fn user_push(&self, repo: &RepoName, wait: bool) -> Option<oneshot::Receiver<Outcome>> {
        self.queue
            .enqueue(repo, std::slice::from_ref(&self.slave))
            .unwrap();
        self.scheduler.submit(repo, &self.slave, When::Always, wait)
    }

    async fn next_call(&mut self) -> Call {
        timeout(LONG, self.calls.recv())
            .await
            .expect("a push was expected")
            .expect("the pusher is alive")
    }

    fn pending(&self, repo: &RepoName) -> Option<u32> {
        let record = self.queue.load(repo).unwrap();
        record.slaves[self.slave.as_str()]
            .pending
            .as_ref()
            .map(|p| p.attempts)
    }
}

async fn outcome(rx: Option<oneshot::Receiver<Outcome>>) -> Outcome {
    timeout(LONG, rx.expect("a waiter"))
        .await
        .expect("the waiter was answered")
        .expect("the scheduler kept the waiter")
}

#[tokio::test(start_paused = true)]
async fn pushes_while_one_runs_collapse_into_one_more() {
    let mut w = world(false);
    let r = repo("testing");
    w.user_push(&r, false);
    assert_eq!(w.next_call().await.when, When::Always);
    // Five more pushes land while the first is in flight: one more push covers them all.
    for _ in 0..4 {
        w.user_push(&r, false);
    }
    let last = w.user_push(&r, true);
    w.fake.release(2);
    assert_eq!(
        w.next_call().await.when,
        When::Always,
        "users' pushes need no compare"
    );
    assert!(outcome(last).await.is_ok());
    assert_eq!(w.fake.pushed.load(Ordering::SeqCst), 2);
    assert!(w.calls.try_recv().is_err(), "a third push ran");
    assert_eq!(w.pending(&r), None, "the queue entry was cleared");
}

#[tokio::test(start_paused = true)]
async fn a_push_accepted_during_a_run_is_not_lost_even_unannounced() {
    let mut w = world(false);
    let r = repo("testing");
    w.user_push(&r, false);
    w.next_call().await;
    // A push lands and is queued, but its notification never reaches the scheduler.
    w.queue.enqueue(&r, std::slice::from_ref(&w.slave)).unwrap();
    w.fake.release(1);
    // The first run covered generation 1 only; the queue says 2, so another push follows.
    let second = w.next_call().await;
    assert_eq!(second.when, When::Always);
    assert_eq!(w.pending(&r), Some(0), "still behind until the second push");
    let waiter = w.scheduler.submit(&r, &w.slave, When::IfDifferent, true);
    w.fake.release(2);
    assert!(outcome(waiter).await.is_ok());
    assert_eq!(w.pending(&r), None);
}

#[tokio::test(start_paused = true)]
async fn waiters_learn_the_outcome_of_a_push_that_covers_them() {
    let mut w = world(false);
    let r = repo("testing");
    let early = w.user_push(&r, true);
    w.next_call().await;
    // Queued after the running push started: that push does not cover it.
    let mut late = w.user_push(&r, true);
    w.fake.release(1);
    assert!(outcome(early).await.is_ok());
    assert!(
        late.as_mut().unwrap().try_recv().is_err(),
        "answered by a push that started before its refs were queued"
    );
    w.next_call().await;
    w.fake.release(1);
    assert!(outcome(late).await.is_ok());

    // A failure answers every waiter at once, also those the failed push did not cover, with
    // the slave's words and whose fault it is.
    w.fake.answer(&[Answer::Refuse]);
    let covered = w.user_push(&r, true);
    w.next_call().await;
    let not_covered = w.user_push(&r, true);
    w.fake.release(1);
    for waiter in [covered, not_covered] {
        let err = outcome(waiter).await.unwrap_err();
        assert_eq!((err.blame(), err.words().as_str()), (Blame::Slave, "no"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_while_a_push_runs_is_answered_by_that_push_when_nothing_new_is_queued() {
    let mut w = world(false);
    let r = repo("testing");
    w.user_push(&r, false);
    w.next_call().await;
    // request-push, or a sync wait, with no new ref update behind it.
    let asked = w.scheduler.submit(&r, &w.slave, When::IfDifferent, true);
    w.fake.release(1);
    assert!(outcome(asked).await.is_ok());
    assert_eq!(w.fake.pushed.load(Ordering::SeqCst), 1);
    assert!(w.calls.try_recv().is_err(), "a second push ran");
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_with_each_failure_and_resets_after_success() {
    let mut w = world(true);
    let r = repo("testing");
    w.fake.answer(&[Answer::Refuse; 4]);
    w.user_push(&r, false);
    let mut at = Vec::new();
    for _ in 0..5 {
        at.push(w.next_call().await.at);
    }
    let gaps: Vec<f64> = at.windows(2).map(|p| (p[1] - p[0]).as_secs_f64()).collect();
    // 1 s, 2 s, 4 s, 8 s, each ±25% jitter, capped at 8 s.
    for (gap, base) in gaps.iter().zip([1.0, 2.0, 4.0, 8.0]) {
        assert!(
            *gap >= base * 0.75 - 0.01 && *gap <= (base * 1.25f64).min(8.0) + 0.01,
            "{gaps:?}"
        );
    }
    // The fifth attempt succeeded: the entry is cleared, attempts with it.
    let waiter = w.scheduler.submit(&r, &w.slave, When::IfDifferent, true);
    assert!(outcome(waiter).await.is_ok());
    assert_eq!(w.pending(&r), None);
    while w.calls.try_recv().is_ok() {}
    // The next failure starts again from the first delay.
    w.fake.answer(&[Answer::Refuse]);
    w.user_push(&r, false);
    let failed = w.next_call().await.at;
    let retried = w.next_call().await.at;
    let gap = (retried - failed).as_secs_f64();
    assert!((0.74..=1.26).contains(&gap), "{gap}");
    assert_eq!(
        w.fake.resets.load(Ordering::SeqCst),
        0,
        "a refusal reset the connection"
    );
}

#[tokio::test(start_paused = true)]
async fn success_to_a_peer_wakes_the_retries_waiting_on_it() {
    // Backoff of at least 75 s: a retry sooner than that was woken, not timed out.
    let mut w = world_with(true, 100.0);
    let (a, b) = (repo("a"), repo("b"));
    w.fake.answer(&[Answer::Unreachable, Answer::Unreachable]);
    w.user_push(&a, false);
    w.next_call().await;
    w.user_push(&b, false);
    let b_failed = w.next_call().await;
    assert_eq!(b_failed.repo, b);
    assert_eq!(
        w.fake.resets.load(Ordering::SeqCst),
        2,
        "transport failures reset"
    );
    // Someone asks for `a` now; it succeeds, so the peer is back: `b` retries at once.
    let asked = w.scheduler.submit(&a, &w.slave, When::IfDifferent, true);
    let a_retry = w.next_call().await;
    assert_eq!(a_retry.repo, a);
    assert!(outcome(asked).await.is_ok());
    let b_retry = w.next_call().await;
    assert_eq!(b_retry.repo, b);
    let waited = (b_retry.at - b_failed.at).as_secs_f64();
    assert!(waited < 1.0, "b waited {waited}s for its own backoff");
}

#[tokio::test(start_paused = true)]
async fn a_local_queue_failure_is_local_and_leaves_the_connection_alone() {
    let w = world(true);
    let r = repo("testing");
    w.user_push(&r, false);
    let done = w.scheduler.submit(&r, &w.slave, When::IfDifferent, true);
    assert!(outcome(done).await.is_ok());
    // The queue record becomes unreadable (a directory where the file was): no push can
    // start, and the slave is not blamed.
    let file = w.dir.path().join("queue/testing.json");
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    let waiter = w.scheduler.submit(&r, &w.slave, When::IfDifferent, true);
    let err = outcome(waiter).await.unwrap_err();
    assert_eq!(err.blame(), Blame::Local, "{}", err.words());
    assert!(
        err.words().starts_with("cannot read the queue: "),
        "{}",
        err.words()
    );
    assert_eq!(w.fake.resets.load(Ordering::SeqCst), 0);
    assert_eq!(
        w.fake.pushed.load(Ordering::SeqCst),
        1,
        "a push ran without the queue"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_not_woken_when_the_peer_answers_for_another_repo() {
    // Backoff of at least 75 s; the peer answering for `b` must not cut `a`'s short.
    let mut w = world_with(true, 100.0);
    let (a, b) = (repo("a"), repo("b"));
    w.fake.answer(&[Answer::Refuse]);
    w.user_push(&a, false);
    let a_failed = w.next_call().await;
    w.user_push(&b, false);
    assert_eq!(w.next_call().await.repo, b);
    let a_retry = w.next_call().await;
    assert_eq!(a_retry.repo, a);
    let waited = (a_retry.at - a_failed.at).as_secs_f64();
    assert!(waited >= 75.0, "a refused push retried after {waited}s");
    assert_eq!(w.fake.resets.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_answered_by_a_success_does_not_cut_a_later_backoff() {
    let mut w = world(false);
    let r = repo("testing");
    w.user_push(&r, false);
    w.next_call().await;
    let asked = w.scheduler.submit(&r, &w.slave, When::IfDifferent, true);
    w.fake.release(1);
    assert!(outcome(asked).await.is_ok());
    // Later, a push is refused: its retry waits for the backoff, not for that old request.
    w.fake.answer(&[Answer::Refuse]);
    w.user_push(&r, false);
    w.fake.release(2);
    let failed = w.next_call().await.at;
    let retried = w.next_call().await.at;
    let gap = (retried - failed).as_secs_f64();
    assert!(gap >= 0.74, "retried after {gap}s");
}

#[tokio::test(start_paused = true)]
async fn a_request_is_answered_only_by_a_push_that_asked_the_slave() {
    let mut w = world(false);
    let r = repo("testing");
    // A sweep's check is in flight: it compares with the last confirmation only.
    w.scheduler.submit(&r, &w.slave, When::IfChanged, false);
    assert_eq!(w.next_call().await.when, When::IfChanged);
    // request-push now: it must hear from the slave itself.
    let mut asked = w.scheduler.submit(&r, &w.slave, When::IfDifferent, true);
    w.fake.release(1);
    let second = w.next_call().await;
    assert_eq!(second.when, When::IfDifferent);
    assert_eq!(
        asked.as_mut().unwrap().try_recv().unwrap_err(),
        oneshot::error::TryRecvError::Empty,
        "answered by the sweep's check"
    );
    w.fake.release(1);
    assert_eq!(outcome(asked).await.unwrap(), Delivered::Pushed);
    // A sweep alone reports what it did: nothing asked, nothing changed.
    let swept = w.scheduler.submit(&r, &w.slave, When::IfChanged, true);
    w.fake.release(1);
    w.next_call().await;
    assert!(matches!(
        outcome(swept).await.unwrap(),
        Delivered::Unchanged { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_bulk_check_answers_what_did_not_change_without_a_push() {
    let mut w = world(true);
    let r = repo("testing");
    assert_eq!(
        outcome(w.user_push(&r, true)).await.unwrap(),
        Delivered::Pushed
    );
    w.next_call().await;
    let check = |w: &World| {
        let mut checked = w.scheduler.check(std::slice::from_ref(&r), true);
        assert_eq!(checked.len(), 1);
        checked.pop().unwrap().2
    };
    // The files say what the slave confirmed: answered here, nobody asked.
    *w.fake.on_disk.lock().unwrap() = Some("f0".into());
    assert!(matches!(check(&w), Checked::Unchanged { since: Some(_) }));
    assert!(
        w.calls.try_recv().is_err(),
        "a push ran for an unchanged repo"
    );
    // Something else, the files unsure, or work pending: a check runs.
    // Work owed is checked against the slave itself: its confirmation may be what is wrong.
    for (on_disk, pending, when) in [
        (Some("f9"), false, When::IfChanged),
        (None, false, When::IfChanged),
        (Some("f0"), true, When::IfDifferent),
    ] {
        *w.fake.on_disk.lock().unwrap() = on_disk.map(str::to_string);
        if pending {
            w.queue.enqueue(&r, std::slice::from_ref(&w.slave)).unwrap();
        }
        let Checked::Submitted(rx) = check(&w) else {
            panic!("{on_disk:?} {pending}: not submitted");
        };
        assert_eq!(w.next_call().await.when, when, "{on_disk:?} {pending}");
        outcome(rx).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_users_push_does_not_wait_behind_a_bulk_request() {
    let mut w = world(false);
    // A bulk request fills every attempt turn (each held at the gate), and one more waits.
    for i in 0..=ATTEMPTS_AT_ONCE {
        w.scheduler
            .submit(&repo(&format!("bulk{i}")), &w.slave, When::IfChanged, false);
    }
    for _ in 0..ATTEMPTS_AT_ONCE {
        w.next_call().await;
    }
    // A user's push starts at once, ahead of the waiting one.
    let user = repo("testing");
    w.user_push(&user, false);
    let call = w.next_call().await;
    assert_eq!((call.repo, call.when), (user, When::Always));
}

/// Records what the scheduler tells it.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, super::observer::Observed)>>);

impl super::observer::PushObserver for Recorder {
    fn finished(&self, slave: &AccountName, _took: Duration, observed: super::observer::Observed) {
        self.0.lock().unwrap().push((slave.to_string(), observed));
    }
}

#[tokio::test(start_paused = true)]
async fn the_observer_hears_each_push_and_failure_but_not_a_check_that_asked_nobody() {
    use super::observer::Observed;
    let w = world(true);
    let seen = Arc::new(Recorder::default());
    w.scheduler.observe(seen.clone());
    let r = repo("testing");
    w.fake.answer(&[Answer::Refuse]);
    // Refused, then pushed on the retry.
    assert!(outcome(w.user_push(&r, true)).await.is_err());
    let rx = w.scheduler.submit(&r, &w.slave, When::IfDifferent, true);
    assert!(outcome(rx).await.is_ok());
    // Nothing changed since the slave confirmed: nobody is asked, nothing is counted.
    let rx = w.scheduler.submit(&r, &w.slave, When::IfChanged, true);
    assert!(outcome(rx).await.is_ok());
    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (
                "server2".to_string(),
                Observed::Failed { reason: "refused" }
            ),
            ("server2".to_string(), Observed::Pushed { bytes: 0 }),
        ]
    );
}
