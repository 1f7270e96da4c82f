//! The oracle's unit tests, beside `oracle.rs` rather than inside it: the
//! loom model (`tests/loom_oracle.rs`) compiles `oracle.rs` itself against
//! loom, where these real-thread tests cannot run.

use super::encoding::Ts;
use super::oracle::Oracle;
use crate::sync::Ordering;
use std::time::{Duration, Instant};

#[test]
fn watermark_waits_for_the_earliest_in_flight_commit() {
    let oracle = Oracle::new(0);
    let (a, b) = (oracle.allocate(), oracle.allocate());
    oracle.finish(b);
    assert_eq!(oracle.visible(), 0, "b finished but a is still in flight");
    oracle.finish(a);
    assert_eq!(oracle.visible(), b);
}

#[test]
fn a_failed_commit_holds_the_watermark_and_releases_later_waiters() {
    let oracle = Oracle::new(0);
    let (a, b) = (oracle.allocate(), oracle.allocate());
    oracle.fail(a);
    oracle.finish(b);
    assert_eq!(oracle.visible(), 0, "no snapshot may see past the failed commit");
    assert!(!oracle.wait_visible(b), "a waiter past it gives up instead of hanging");
    assert!(oracle.wait_visible(0));
}

/// Waits (up to 10 s) until `count` threads wait in `wait_visible`.
fn until_waiting(oracle: &Oracle, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while oracle.waiting.load(Ordering::SeqCst) != count {
        assert!(Instant::now() < deadline, "waiters never parked");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Counted comes just before parked: give the park a moment.
    std::thread::sleep(Duration::from_millis(20));
}

/// A thread waiting for `ts`; its answer comes through the receiver.
fn waiter(oracle: &std::sync::Arc<Oracle>, ts: Ts) -> std::sync::mpsc::Receiver<bool> {
    let (answer, receiver) = std::sync::mpsc::channel();
    let oracle = std::sync::Arc::clone(oracle);
    std::thread::spawn(move || answer.send(oracle.wait_visible(ts)).unwrap());
    receiver
}

/// The waiter's answer; fails instead of hanging if it never comes.
fn answer_of(receiver: &std::sync::mpsc::Receiver<bool>) -> bool {
    receiver.recv_timeout(Duration::from_secs(10)).expect("the waiter was never woken")
}

#[test]
fn a_finish_wakes_only_the_waiters_it_makes_visible() {
    let oracle = std::sync::Arc::new(Oracle::new(0));
    let (a, b, c) = (oracle.allocate(), oracle.allocate(), oracle.allocate());
    let (wait_b, wait_c) = (waiter(&oracle, b), waiter(&oracle, c));
    until_waiting(&oracle, 2);
    oracle.finish(b);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(oracle.wakeups.load(Ordering::SeqCst), 0, "a is in flight: the watermark did not move");
    oracle.finish(a);
    assert!(answer_of(&wait_b), "the watermark reached b");
    until_waiting(&oracle, 1);
    assert_eq!(oracle.wakeups.load(Ordering::SeqCst), 1, "c's waiter was not woken: the watermark is below c");
    assert!(wait_c.try_recv().is_err(), "c's waiter still waits");
    oracle.finish(c);
    assert!(answer_of(&wait_c));
    assert_eq!(oracle.wakeups.load(Ordering::SeqCst), 2);
}

/// A waiter checked the watermark (below its commit) and is paused
/// before it counts itself; the finish that covers it runs meanwhile,
/// sees no waiter and wakes nobody. Resumed, the waiter must not park
/// for good: its check under the bucket lock sees the new watermark.
#[test]
#[cfg(feature = "failpoints")]
fn a_finish_between_a_waiters_check_and_its_park_is_not_lost() {
    use crate::failpoint::Pause;
    let oracle = std::sync::Arc::new(Oracle::new(0));
    let a = oracle.allocate();
    let pause = Pause::arm_for("oracle.before_wait", |thread| thread.name() == Some("waiter"));
    let (answer, receiver) = std::sync::mpsc::channel();
    let waiter = {
        let oracle = std::sync::Arc::clone(&oracle);
        std::thread::Builder::new()
            .name("waiter".into())
            .spawn(move || answer.send(oracle.wait_visible(a)).unwrap())
            .unwrap()
    };
    assert!(pause.wait_parked(Duration::from_secs(10)), "the waiter never reached its count");
    assert_eq!(oracle.waiting.load(Ordering::SeqCst), 0);
    oracle.finish(a);
    pause.resume();
    assert!(answer_of(&receiver), "the waiter saw its commit visible");
    waiter.join().unwrap();
    assert_eq!(oracle.wakeups.load(Ordering::SeqCst), 0, "it never parked: nobody had to wake it");
}

#[test]
fn a_failure_wakes_the_waiters_past_it_to_give_up() {
    let oracle = std::sync::Arc::new(Oracle::new(0));
    let (a, b) = (oracle.allocate(), oracle.allocate());
    let wait_b = waiter(&oracle, b);
    until_waiting(&oracle, 1);
    oracle.fail(a);
    assert!(!answer_of(&wait_b), "the watermark never passes a failed commit");
}

/// Many threads finish in any order and each waits for its own
/// commit: a lost wake-up hangs a thread, which the deadline reports.
#[test]
fn concurrent_commits_each_see_their_own_commit_visible() {
    let oracle = std::sync::Arc::new(Oracle::new(0));
    let threads = 8;
    let rounds = 3_000;
    let (done, finished) = std::sync::mpsc::channel();
    for thread in 0..threads {
        let (oracle, done) = (std::sync::Arc::clone(&oracle), done.clone());
        std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(thread);
            for _ in 0..rounds {
                let ts = oracle.allocate();
                for _ in 0..rng.usize(0..200) {
                    std::hint::spin_loop();
                }
                if rng.u8(..) < 8 {
                    std::thread::yield_now();
                }
                oracle.finish(ts);
                assert!(oracle.wait_visible(ts));
                assert!(oracle.visible() >= ts);
            }
            done.send(()).unwrap();
        });
    }
    for _ in 0..threads {
        finished.recv_timeout(Duration::from_secs(60)).expect("a waiter was never woken");
    }
    assert_eq!(oracle.visible(), threads * rounds);
    assert_eq!(oracle.waiting.load(Ordering::SeqCst), 0);
}

#[test]
fn horizon_is_the_oldest_snapshot() {
    let oracle = Oracle::new(5);
    let s = oracle.begin();
    let t = oracle.allocate();
    oracle.finish(t);
    assert_eq!((s, oracle.horizon()), (5, 5));
    oracle.end(s);
    assert_eq!(oracle.horizon(), 6);
}
