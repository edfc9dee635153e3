//! Channels between the tasks and callbacks of this crate, which all run on the page's one
//! thread: an unbounded queue ([`unbounded`]) and a one-value reply ([`oneshot`]).
//!
//! Hand-written instead of `futures-channel`, for the bundle's size: its channels are made for
//! threads (atomics, `Arc`, a lock-free queue) and were compiled anew for every message type;
//! these are an `Rc<RefCell<..>>` each. Same rules as futures-channel's: a send fails once the
//! receiver is gone (or closed), the receiver ends (`None`, or `Canceled` for a reply) once every
//! sender is gone, and messages still queued when the receiver goes are dropped.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Queue<T> {
    items: VecDeque<T>,
    waker: Option<Waker>,
    senders: usize,
    closed: bool,
}

/// A new unbounded queue.
pub(crate) fn unbounded<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    let queue = Rc::new(RefCell::new(Queue {
        items: VecDeque::new(),
        waker: None,
        senders: 1,
        closed: false,
    }));
    (UnboundedSender(queue.clone()), UnboundedReceiver(queue))
}

/// Puts messages on the queue.
pub(crate) struct UnboundedSender<T>(Rc<RefCell<Queue<T>>>);

impl<T> UnboundedSender<T> {
    /// Queues `item`; gives it back when the receiver is gone or closed.
    pub(crate) fn unbounded_send(&self, item: T) -> Result<(), T> {
        let waker = {
            let mut queue = self.0.borrow_mut();
            if queue.closed {
                return Err(item);
            }
            queue.items.push_back(item);
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        self.0.borrow_mut().senders += 1;
        Self(self.0.clone())
    }
}

impl<T> Drop for UnboundedSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut queue = self.0.borrow_mut();
            queue.senders -= 1;
            if queue.senders > 0 {
                return;
            }
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> fmt::Debug for UnboundedSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnboundedSender")
    }
}

/// Takes messages off the queue, in the order they were sent.
pub(crate) struct UnboundedReceiver<T>(Rc<RefCell<Queue<T>>>);

impl<T> UnboundedReceiver<T> {
    /// The next message; `None` once the queue is empty and every sender is gone (or it was
    /// closed).
    pub(crate) async fn next(&mut self) -> Option<T> {
        poll_fn(|context| {
            let mut queue = self.0.borrow_mut();
            if let Some(item) = queue.items.pop_front() {
                return Poll::Ready(Some(item));
            }
            if queue.senders == 0 || queue.closed {
                return Poll::Ready(None);
            }
            queue.waker = Some(context.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The next message if one is queued.
    pub(crate) fn try_next(&mut self) -> Option<T> {
        self.0.borrow_mut().items.pop_front()
    }

    /// Refuses further messages; those already queued can still be taken.
    pub(crate) fn close(&mut self) {
        self.0.borrow_mut().closed = true;
    }
}

impl<T> Drop for UnboundedReceiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut queue = self.0.borrow_mut();
            queue.closed = true;
            std::mem::take(&mut queue.items)
        };
        // Dropped outside the borrow: a message may hold a sender of this very queue.
        drop(items);
    }
}

impl<T> fmt::Debug for UnboundedReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnboundedReceiver")
    }
}

pub(crate) mod oneshot {
    //! One value from one sender to one receiver.

    use super::*;

    struct Slot<T> {
        value: Option<T>,
        waker: Option<Waker>,
        sender_gone: bool,
        receiver_gone: bool,
    }

    /// A new reply channel.
    pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let slot = Rc::new(RefCell::new(Slot {
            value: None,
            waker: None,
            sender_gone: false,
            receiver_gone: false,
        }));
        (Sender(slot.clone()), Receiver(slot))
    }

    /// The sender was dropped without sending.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Canceled;

    /// Sends the one value.
    pub(crate) struct Sender<T>(Rc<RefCell<Slot<T>>>);

    impl<T> Sender<T> {
        /// Hands `value` to the receiver; gives it back when the receiver is gone.
        pub(crate) fn send(self, value: T) -> Result<(), T> {
            let mut slot = self.0.borrow_mut();
            if slot.receiver_gone {
                return Err(value);
            }
            slot.value = Some(value);
            Ok(())
            // Dropping `self` wakes the receiver.
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            let waker = {
                let mut slot = self.0.borrow_mut();
                slot.sender_gone = true;
                slot.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    impl<T> fmt::Debug for Sender<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("oneshot::Sender")
        }
    }

    /// Waits for the value: `Err(Canceled)` when the sender was dropped without sending.
    pub(crate) struct Receiver<T>(Rc<RefCell<Slot<T>>>);

    impl<T> Future for Receiver<T> {
        type Output = Result<T, Canceled>;

        fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
            let mut slot = self.0.borrow_mut();
            if let Some(value) = slot.value.take() {
                return Poll::Ready(Ok(value));
            }
            if slot.sender_gone {
                return Poll::Ready(Err(Canceled));
            }
            slot.waker = Some(context.waker().clone());
            Poll::Pending
        }
    }

    impl<T> Drop for Receiver<T> {
        fn drop(&mut self) {
            let value = {
                let mut slot = self.0.borrow_mut();
                slot.receiver_gone = true;
                slot.value.take()
            };
            drop(value);
        }
    }

    impl<T> fmt::Debug for Receiver<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("oneshot::Receiver")
        }
    }
}
