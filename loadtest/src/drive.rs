//! Driving the load: arrivals on a fixed schedule (open loop) or users that wait for their
//! answers (closed loop), then the requests in flight drained; and the progress bar.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::progress;
use crate::report::Outcome;
use crate::schedule::OpenSchedule;
use crate::world::World;
use crate::Mix;

pub(crate) fn worker_seed(seed: u64, i: u64) -> u64 {
    seed ^ i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn open_loop(
    world: &Arc<World>,
    tasks: &mut JoinSet<()>,
    schedule: OpenSchedule,
    mix: Mix,
    max_in_flight: usize,
    timeout: Duration,
    start: Instant,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    for i in 0..schedule.total() {
        let due = start + schedule.due(i);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        while tasks.try_join_next().is_some() {}
        let world = world.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(worker_seed(seed, i));
            let action = mix.pick(&mut rng);
            // Waiting for a slot is part of the latency: it counts from `due`.
            let permit = match tokio::time::timeout(timeout, permits.acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    world.recorder.lock().expect("recorder lock").record(
                        action.endpoint(),
                        due.elapsed(),
                        &Outcome::Timeout,
                    );
                    return;
                }
            };
            world.in_flight.fetch_add(1, Ordering::Relaxed);
            world.act(action, &mut rng, due).await;
            world.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    // The last arrival is due just before the end: wait out the duration.
    tokio::select! {
        _ = tokio::time::sleep_until(start + schedule.due(schedule.total())) => {}
        _ = stop.wait_for(|v| *v) => {}
    }
}

pub(crate) async fn progress_loop(
    world: Arc<World>,
    start: Instant,
    duration: Duration,
    waiting: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => break,
        }
        let (requests, errors) = {
            let r = world.recorder.lock().expect("recorder lock");
            (r.requests(), r.errors())
        };
        let (fresh_pending, fresh_p50_ms) = match &world.tracker {
            Some(t) => {
                let t = t.lock().expect("tracker lock");
                (Some(t.pending()), Some(t.p50_ms()))
            }
            None => (None, None),
        };
        progress::draw(&progress::Snapshot {
            elapsed: start.elapsed(),
            duration,
            requests,
            errors,
            in_flight: world.in_flight.load(Ordering::Relaxed),
            fresh_pending,
            fresh_p50_ms,
            waiting: waiting.load(Ordering::Relaxed),
        });
    }
    progress::clear();
}

/// `users` users, each sending its next request when the last one answered, until the
/// duration is over or `stop`.
pub(crate) async fn closed_loop(
    world: &Arc<World>,
    tasks: &mut JoinSet<()>,
    users: usize,
    mix: Mix,
    seed: u64,
    deadline: Instant,
    stop: watch::Receiver<bool>,
) {
    for u in 0..users {
        let world = world.clone();
        let stop = stop.clone();
        let mut rng = SmallRng::seed_from_u64(worker_seed(seed, u as u64));
        tasks.spawn(async move {
            while Instant::now() < deadline && !*stop.borrow() {
                let action = mix.pick(&mut rng);
                world.in_flight.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = world.act(action, &mut rng, Instant::now()) => {}
                    _ = tokio::time::sleep_until(deadline + Duration::from_secs(30)) => {}
                }
                world.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
    let mut stop = stop;
    tokio::select! {
        _ = tokio::time::sleep_until(deadline) => {}
        _ = stop.wait_for(|v| *v) => {}
    }
}

/// Lets in-flight requests finish (bounded by their timeout), unless `abort` hurries it.
pub(crate) async fn drain(
    tasks: &mut JoinSet<()>,
    timeout: Duration,
    mut abort: watch::Receiver<bool>,
) {
    let deadline = Instant::now() + timeout * 2 + Duration::from_secs(1);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = tokio::time::sleep_until(deadline) => { tasks.abort_all(); break }
            _ = abort.wait_for(|v| *v) => { tasks.abort_all(); break }
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Waits (at most `wait`, or until `abort`) for the sampled orders still missing from OLAP;
/// returns how long it waited.
pub(crate) async fn wait_for_freshness(
    world: &World,
    wait: Duration,
    waiting: &AtomicBool,
    abort: &watch::Receiver<bool>,
) -> Duration {
    waiting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    if let Some(tracker) = &world.tracker {
        let deadline = start + wait;
        while tracker.lock().expect("tracker lock").pending() > 0
            && Instant::now() < deadline
            && !*abort.borrow()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    start.elapsed()
}
