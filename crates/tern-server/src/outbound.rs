//! One connection's outbound queue: every frame the server queues for it,
//! replies and pushes alike, counts against one byte budget
//! (`outbound_queue_bytes`) as well as the frame bound
//! (`outbound_queue_frames`). Bytes stay counted until the writer has handed
//! the frame to QUIC, whose own send buffer is bounded by flow control.
//!
//! - A push that does not fit closes the connection as too slow
//!   ([`Outbound::try_push`]); the device catches up with Sync.
//! - A request reserves room for its answer before it runs
//!   ([`Outbound::reserve`]): a client that does not read makes the request
//!   loop wait, and after `slow_reader_timeout_secs` of waiting the
//!   connection is closed as too slow. So the server never builds answers
//!   it has no room for (a page of History is built only once its bytes are
//!   reserved).
//! - A frame is always admitted into an empty queue, so one answer larger
//!   than the budget still goes out.
//!
//! Memory per connection is therefore at most the budget, plus one answer
//! larger than its reservation (an error listing devices, say) per request
//! in flight. Peers do the same: Signal-Server and most WebSocket servers
//! bound each connection's send buffer in bytes and drop slow readers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::clock::Clock;

/// Why a frame could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The peer does not read fast enough: close it as too slow.
    #[error("outbound queue full; the peer does not read")]
    Full,
    /// The connection's writer is gone (the connection is closing).
    #[error("connection closed")]
    Closed,
}

/// A frame in the queue and the bytes it holds of the budget.
pub struct Queued {
    pub frame: Bytes,
    _held: Reservation,
}

/// The byte budget shared by a connection's queue handles and its writer.
#[derive(Debug)]
struct Budget {
    limit: usize,
    used: AtomicUsize,
    /// Requests waiting for room; `freed` is signalled only while some are.
    waiting: AtomicUsize,
    freed: Notify,
}

impl Budget {
    /// Takes `bytes` if they fit (or the queue is empty).
    fn try_take(&self, bytes: usize) -> bool {
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            if used != 0 && used.saturating_add(bytes) > self.limit {
                return false;
            }
            let next = used.saturating_add(bytes);
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Takes `bytes` whether or not they fit.
    fn force_take(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            // SeqCst with the waiter's increment and retry: either it sees
            // these bytes free, or this sees it waiting.
            self.used.fetch_sub(bytes, Ordering::SeqCst);
            if self.waiting.load(Ordering::SeqCst) > 0 {
                self.freed.notify_waiters();
            }
        }
    }
}

/// Bytes held of a connection's budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Reservation {
    /// Resizes the reservation to exactly `bytes` (an answer is as large as
    /// it turned out). Growing never fails: the answer exists already.
    fn fit(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.budget.force_take(bytes - self.bytes);
        } else {
            self.budget.give_back(self.bytes - bytes);
        }
        self.bytes = bytes;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// A cloneable handle that queues frames for one connection's writer.
#[derive(Clone, Debug)]
pub struct Outbound {
    tx: mpsc::Sender<Queued>,
    budget: Arc<Budget>,
}

impl Outbound {
    /// A queue of at most `frames` frames and `bytes` bytes, and the
    /// writer's end of it.
    pub fn channel(frames: usize, bytes: usize) -> (Outbound, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(frames.max(1));
        let budget = Arc::new(Budget {
            limit: bytes,
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        });
        (Outbound { tx, budget }, rx)
    }

    /// Bytes queued (or reserved for answers) now.
    pub fn queued_bytes(&self) -> usize {
        self.budget.used.load(Ordering::Acquire)
    }

    /// Queues a push now, or fails with [`QueueError::Full`] if it does not
    /// fit in frames or bytes.
    pub fn try_push(&self, frame: Bytes) -> Result<(), QueueError> {
        if !self.budget.try_take(frame.len()) {
            return Err(QueueError::Full);
        }
        let held = Reservation {
            budget: Arc::clone(&self.budget),
            bytes: frame.len(),
        };
        self.tx
            .try_send(Queued { frame, _held: held })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => QueueError::Full,
                mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
            })
    }

    /// Reserves `bytes` for an answer, waiting while the queue is too full
    /// for them, at most `patience` on `clock`.
    ///
    /// # Errors
    /// [`QueueError::Full`] if the peer did not read enough in time.
    pub async fn reserve(
        &self,
        bytes: usize,
        clock: &Clock,
        patience: Duration,
    ) -> Result<Reservation, QueueError> {
        if !self.budget.try_take(bytes) {
            // Only a full queue pays for a timer.
            let wait = async {
                loop {
                    let freed = self.budget.freed.notified();
                    tokio::pin!(freed);
                    freed.as_mut().enable();
                    if self.budget.try_take(bytes) {
                        return;
                    }
                    freed.await;
                }
            };
            self.budget.waiting.fetch_add(1, Ordering::SeqCst);
            let waited = clock.timeout(patience, wait).await;
            self.budget.waiting.fetch_sub(1, Ordering::AcqRel);
            waited.map_err(|_| QueueError::Full)?;
        }
        Ok(Reservation {
            budget: Arc::clone(&self.budget),
            bytes,
        })
    }

    /// Queues an answer under its reservation (resized to the frame),
    /// waiting for room in frames if needed.
    ///
    /// # Errors
    /// [`QueueError::Closed`] if the writer is gone.
    pub async fn send_reserved(
        &self,
        frame: Bytes,
        mut held: Reservation,
    ) -> Result<(), QueueError> {
        held.fit(frame.len());
        self.tx
            .send(Queued { frame, _held: held })
            .await
            .map_err(|_| QueueError::Closed)
    }

    /// Queues a frame counted against the budget whether or not it fits
    /// (an answer built without a reservation, a last error before a close).
    ///
    /// # Errors
    /// [`QueueError::Closed`] if the writer is gone.
    pub async fn send_unreserved(&self, frame: Bytes) -> Result<(), QueueError> {
        self.budget.force_take(frame.len());
        let held = Reservation {
            budget: Arc::clone(&self.budget),
            bytes: frame.len(),
        };
        self.tx
            .send(Queued { frame, _held: held })
            .await
            .map_err(|_| QueueError::Closed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[test]
    fn pushes_are_bounded_in_bytes_and_an_empty_queue_takes_anything() {
        let (out, mut rx) = Outbound::channel(100, 1_000);
        out.try_push(frame(5_000))
            .expect("an empty queue takes a large frame");
        assert_eq!(out.try_push(frame(1)), Err(QueueError::Full));
        drop(rx.try_recv().expect("queued"));
        assert_eq!(
            out.queued_bytes(),
            0,
            "written frames give their bytes back"
        );
        out.try_push(frame(600)).unwrap();
        out.try_push(frame(400)).unwrap();
        assert_eq!(out.try_push(frame(1)), Err(QueueError::Full));
    }

    #[test]
    fn pushes_are_bounded_in_frames_too() {
        let (out, _rx) = Outbound::channel(2, 1_000_000);
        out.try_push(frame(1)).unwrap();
        out.try_push(frame(1)).unwrap();
        assert_eq!(out.try_push(frame(1)), Err(QueueError::Full));
        assert_eq!(out.queued_bytes(), 2, "a refused push holds nothing");
    }

    #[tokio::test]
    async fn a_reservation_waits_for_the_reader_and_gives_up_on_the_clock() {
        let clock = Clock::manual(0);
        let patience = Duration::from_secs(10);
        let (out, mut rx) = Outbound::channel(100, 1_000);
        let held = out.reserve(800, &clock, patience).await.unwrap();
        // Room for 200 more: a 500-byte answer must wait for the reader.
        let waiting = out.reserve(500, &clock, patience);
        let reader = async {
            out.send_reserved(frame(800), held).await.unwrap();
            drop(rx.recv().await.expect("written"));
        };
        let (second, ()) = tokio::join!(waiting, reader);
        let second = second.expect("room once the reader read");
        assert_eq!(out.queued_bytes(), 500);
        // Nobody reads now: the next reservation gives up after its patience.
        let third = out.reserve(600, &clock, patience);
        let ticker = async {
            tokio::task::yield_now().await;
            clock.advance(10_000);
        };
        let (third, ()) = tokio::join!(third, ticker);
        assert_eq!(third.unwrap_err(), QueueError::Full);
        drop(second);
        assert_eq!(out.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn an_answer_larger_than_its_reservation_is_counted_in_full() {
        let clock = Clock::manual(0);
        let (out, mut rx) = Outbound::channel(100, 1_000);
        let held = out.reserve(10, &clock, Duration::ZERO).await.unwrap();
        out.send_reserved(frame(3_000), held).await.unwrap();
        assert_eq!(out.queued_bytes(), 3_000);
        assert_eq!(out.try_push(frame(1)), Err(QueueError::Full));
        drop(rx.recv().await);
        assert_eq!(out.queued_bytes(), 0);
    }
}
