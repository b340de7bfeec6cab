//! Memory for the frames a forward input is reading, shared by all its
//! connections (`max_buffered_bytes`). Each connection reads a frame whole
//! before decoding it, so without a shared bound a fleet sending its
//! backlog at once (fluent-bit sends every stored chunk on a connection of
//! its own) makes the input hold connections x frame size: 128 MiB for one
//! fluent-bit draining 1M records, up to max_connections x max_frame_bytes
//! (16 GiB by default) for a hostile fleet.
//!
//! A connection's buffer capacity above `FREE` is taken from the budget
//! before it grows; when the budget is spent the connection stops reading
//! (its sender is pushed back by TCP) until another gives memory back. The
//! connection that started holding memory first may always grow, up to
//! max_frame_bytes: it finishes its frame and gives memory back, so
//! connections waiting on each other's half-read frames cannot deadlock,
//! and the input holds at most the budget plus one frame (plus `FREE` per
//! connection). A busy connection keeps its capacity for its next frame
//! (growing it again for each frame cost CPU) unless others wait: it gives
//! it back as soon as one starts waiting (`wanted`), also while it is
//! itself waiting for its sender's next frame. Checking only when its next
//! frame began let a connection whose sender had nothing more for it keep
//! megabytes until its one-second read timeout, while the others waited:
//! a fluent-bit draining its backlog stalled for a second, once or twice
//! per million records.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Capacity a connection has without taking from the budget: small frames
/// and idle connections (4 KiB) never wait.
pub const FREE: usize = 64 << 10;

pub struct FrameMemory {
    limit: usize,
    state: Mutex<State>,
    freed: Notify,
    /// Told when a connection starts waiting for memory.
    wanted: Notify,
}

#[derive(Default)]
struct State {
    used: usize,
    /// Connections waiting for memory.
    waiting: usize,
    next_ticket: u64,
    /// Connections holding memory, oldest first.
    holders: BTreeSet<u64>,
}

/// What one connection holds of a `FrameMemory`; given back on drop.
pub struct Held {
    memory: Arc<FrameMemory>,
    bytes: usize,
    ticket: Option<u64>,
}

/// Why `Held::grow` gave up.
pub enum Stopped {
    Stopping,
}

impl FrameMemory {
    pub fn new(limit: usize) -> Arc<FrameMemory> {
        Arc::new(FrameMemory {
            limit,
            state: Mutex::default(),
            freed: Notify::new(),
            wanted: Notify::new(),
        })
    }

    pub fn hold(self: &Arc<Self>) -> Held {
        Held {
            memory: self.clone(),
            bytes: 0,
            ticket: None,
        }
    }

    /// Completes when a connection starts waiting for memory (`enable` it,
    /// then look at `Held::others_wait`, so that none is missed).
    pub fn wanted(&self) -> tokio::sync::futures::Notified<'_> {
        self.wanted.notified()
    }

    /// Bytes held by all connections (for tests and `/metrics`).
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.state.lock().unwrap().used
    }
}

impl Held {
    /// Takes what a buffer of `capacity` bytes needs beyond what this
    /// connection holds, waiting while the budget is spent (unless it is
    /// the oldest holder). `waits` is called once if it has to wait;
    /// `stopping` is asked every second while it waits.
    pub async fn grow(
        &mut self,
        capacity: usize,
        mut waits: impl FnMut(),
        stopping: impl Fn() -> bool,
    ) -> Result<(), Stopped> {
        let target = capacity.saturating_sub(FREE);
        if target <= self.bytes {
            return Ok(());
        }
        let need = target - self.bytes;
        let memory = self.memory.clone();
        let mut told = false;
        loop {
            let notified = memory.freed.notified();
            tokio::pin!(notified);
            {
                let mut s = memory.state.lock().unwrap();
                let ticket = *self.ticket.get_or_insert_with(|| {
                    s.next_ticket += 1;
                    s.next_ticket
                });
                s.holders.insert(ticket);
                let oldest = s.holders.first() == Some(&ticket);
                if s.used + need <= memory.limit || oldest {
                    s.used += need;
                    self.bytes += need;
                    return Ok(());
                }
                s.waiting += 1;
                // Registered before the lock goes: a release in between
                // is not missed.
                notified.as_mut().enable();
            }
            // Connections between frames give back what they kept.
            memory.wanted.notify_waiters();
            if !told {
                waits();
                told = true;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
            memory.state.lock().unwrap().waiting -= 1;
            if stopping() {
                return Err(Stopped::Stopping);
            }
        }
    }

    /// Gives back what a buffer of `capacity` bytes does not need.
    pub fn shrink(&mut self, capacity: usize) {
        let keep = capacity.saturating_sub(FREE);
        if keep >= self.bytes {
            return;
        }
        let mut s = self.memory.state.lock().unwrap();
        s.used -= self.bytes - keep;
        self.bytes = keep;
        if keep == 0 {
            if let Some(t) = self.ticket.take() {
                s.holders.remove(&t);
            }
        }
        drop(s);
        self.memory.freed.notify_waiters();
    }

    /// The memory this holds from.
    pub fn memory(&self) -> Arc<FrameMemory> {
        self.memory.clone()
    }

    /// Whether this holds memory from the budget.
    pub fn holds(&self) -> bool {
        self.bytes > 0
    }

    /// Whether other connections wait for memory (a busy connection then
    /// gives back what it kept for its next frame).
    pub fn others_wait(&self) -> bool {
        self.bytes > 0 && self.memory.state.lock().unwrap().waiting > 0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shrink(0);
        // A holder's ticket without bytes (it waited, then went).
        if let Some(t) = self.ticket.take() {
            self.memory.state.lock().unwrap().holders.remove(&t);
            self.memory.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn small_buffers_take_nothing_and_the_budget_bounds_the_rest() {
        rt().block_on(async {
            let m = FrameMemory::new(1 << 20);
            let mut a = m.hold();
            a.grow(FREE, || panic!("no wait"), || false).await.ok();
            assert_eq!(m.used(), 0);
            a.grow(FREE + (1 << 20), || panic!("no wait"), || false)
                .await
                .ok();
            assert_eq!(m.used(), 1 << 20);
            // A second connection waits until the first gives back.
            let mut b = m.hold();
            let waited = std::cell::Cell::new(false);
            let grow_b = b.grow(FREE + 1000, || waited.set(true), || false);
            tokio::pin!(grow_b);
            assert!(still_waiting(grow_b.as_mut()).await);
            assert!(a.others_wait());
            a.shrink(4096);
            assert!(grow_b.await.is_ok());
            assert!(waited.get());
            assert_eq!(m.used(), 1000);
        });
    }

    #[test]
    fn the_oldest_holder_grows_past_the_budget_so_half_read_frames_do_not_deadlock() {
        rt().block_on(async {
            let m = FrameMemory::new(1 << 20);
            let (mut a, mut b) = (m.hold(), m.hold());
            a.grow(FREE + (600 << 10), || {}, || false).await.ok();
            b.grow(FREE + (400 << 10), || {}, || false).await.ok();
            // Both half-way through a frame, the budget spent: the older
            // goes on, the younger waits.
            a.grow(
                FREE + (2 << 20),
                || panic!("the oldest does not wait"),
                || false,
            )
            .await
            .ok();
            assert_eq!(m.used(), (2 << 20) + (400 << 10));
            {
                let grow_b = b.grow(FREE + (800 << 10), || {}, || false);
                tokio::pin!(grow_b);
                assert!(still_waiting(grow_b.as_mut()).await);
                drop(a);
                assert!(grow_b.await.is_ok());
            }
            assert_eq!(m.used(), 800 << 10);
            drop(b);
            assert_eq!(m.used(), 0);
        });
    }

    #[test]
    fn a_connection_between_frames_is_told_when_another_starts_waiting() {
        rt().block_on(async {
            let m = FrameMemory::new(1 << 20);
            let mut a = m.hold();
            a.grow(FREE + (1 << 20), || {}, || false).await.ok();
            // `a` is done with its frame and waits for its sender, keeping
            // the capacity for the next.
            let memory = a.memory();
            let wanted = memory.wanted();
            tokio::pin!(wanted);
            wanted.as_mut().enable();
            assert!(!a.others_wait());
            let mut b = m.hold();
            {
                let grow_b = b.grow(FREE + 1000, || {}, || false);
                tokio::pin!(grow_b);
                assert!(still_waiting(grow_b.as_mut()).await);
                // `b` waiting woke `a`, which gives back and lets `b` on.
                assert!(is_ready_now(wanted.as_mut()));
                assert!(a.others_wait());
                a.shrink(4096);
                assert!(grow_b.await.is_ok());
            }
            assert_eq!(m.used(), 1000);
        });
    }

    /// Whether `grow` is still waiting for memory 50 ms on.
    async fn still_waiting<F: std::future::Future>(grow: std::pin::Pin<&mut F>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), grow)
            .await
            .is_err()
    }

    /// Whether `f` is ready without waiting.
    fn is_ready_now<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> bool {
        let waker = std::task::Waker::noop();
        f.poll(&mut std::task::Context::from_waker(waker))
            .is_ready()
    }

    #[test]
    fn a_waiting_connection_stops_when_asked() {
        rt().block_on(async {
            let m = FrameMemory::new(1 << 20);
            let mut a = m.hold();
            a.grow(FREE + (1 << 20), || {}, || false).await.ok();
            let mut c = m.hold();
            let r = c.grow(FREE + 10, || {}, || true).await;
            assert!(matches!(r, Err(Stopped::Stopping)));
        });
    }
}
