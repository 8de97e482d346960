//! [`CancellationToken`]: a tree of cancel flags with wakers.
//!
//! Each token is a node. A node holds its flag, the wakers of tasks waiting
//! for it and its live children; a child holds its parent, so cancelling a
//! node cancels its whole subtree. A node leaves its parent's list once no
//! token points at it and it has no children left, so a long-lived parent
//! handing out short-lived children does not grow.
//!
//! Locks are taken one at a time, never nested: `cancel` takes the node's
//! lists out under its lock, then wakes and walks the children unlocked.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// A flag that tasks on any shard (or plain threads) can set and wait for,
/// like tokio-util's. Clones share the flag; [`child_token`] makes a token
/// cancelled with this one but cancellable on its own.
///
/// [`child_token`]: CancellationToken::child_token
///
/// ```
/// use ringshard::sync::CancellationToken;
/// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
/// rt.block_on(async {
///     let parent = CancellationToken::new();
///     let child = parent.child_token();
///     let task = ringshard::spawn(async move {
///         child.cancelled().await;
///         "stopped"
///     });
///     parent.cancel();
///     assert_eq!(task.await.unwrap(), "stopped");
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct CancellationToken {
    handle: Arc<Handle>,
}

/// Shared by the clones of one token; when the last goes, the node may leave
/// the tree.
struct Handle {
    node: Arc<Node>,
}

struct Node {
    cancelled: AtomicBool,
    /// The parent and our key in its `children`.
    parent: Option<(Arc<Node>, usize)>,
    lists: Mutex<Lists>,
}

#[derive(Default)]
struct Lists {
    waiters: Slab<Waker>,
    children: Slab<Arc<Node>>,
    /// Some token still points at this node.
    has_handle: bool,
}

impl Node {
    fn lock(&self) -> MutexGuard<'_, Lists> {
        // No user code runs under the lock but `Waker::clone`; a poisoned
        // lock is still consistent.
        self.lists
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn new(parent: Option<(Arc<Node>, usize)>, cancelled: bool) -> Node {
        Node {
            cancelled: AtomicBool::new(cancelled),
            parent,
            lists: Mutex::new(Lists {
                has_handle: true,
                ..Lists::default()
            }),
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

/// Cancels `root` and everything under it.
fn cancel_tree(root: Arc<Node>) {
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if node.cancelled.swap(true, Ordering::AcqRel) {
            continue;
        }
        let mut lists = node.lock();
        let waiters = std::mem::take(&mut lists.waiters);
        let children = std::mem::take(&mut lists.children);
        drop(lists);
        waiters.into_iter().for_each(|(_, waker)| waker.wake());
        stack.extend(children.into_iter().map(|(_, child)| child));
    }
}

/// Removes `node` from its parent once nothing holds it there, and the
/// parent from its own parent if that emptied it, and so on up.
///
/// A node is removed only from the slot that still holds *it*: once a node
/// has left (its parent was cancelled and took its list, or it was removed
/// before), its old key may name a newer sibling, which must stay.
fn detach(node: &Node) {
    let mut child: *const Node = node;
    let mut next = node.parent.clone();
    while let Some((parent, key)) = next.take() {
        let mut lists = parent.lock();
        let ours = lists
            .children
            .get(key)
            .is_some_and(|slot| std::ptr::eq(Arc::as_ptr(slot), child));
        if !ours {
            // Already gone: whoever removed it also saw to the parent.
            break;
        }
        lists.children.remove(key);
        let unused = lists.children.is_empty() && !lists.has_handle;
        drop(lists);
        if unused {
            child = Arc::as_ptr(&parent);
            next = parent.parent.clone();
        }
    }
}

impl CancellationToken {
    /// A token that is not cancelled and has no parent.
    pub fn new() -> CancellationToken {
        CancellationToken::from_node(Arc::new(Node::new(None, false)))
    }

    fn from_node(node: Arc<Node>) -> CancellationToken {
        CancellationToken {
            handle: Arc::new(Handle { node }),
        }
    }

    /// A token cancelled when this one is (or at once, if it already is),
    /// whose own `cancel` does not reach this one.
    pub fn child_token(&self) -> CancellationToken {
        let parent = &self.handle.node;
        let mut lists = parent.lock();
        if parent.is_cancelled() {
            return CancellationToken::from_node(Arc::new(Node::new(None, true)));
        }
        let entry = lists.children.vacant_entry();
        let child = Arc::new(Node::new(Some((parent.clone(), entry.key())), false));
        entry.insert(child.clone());
        drop(lists);
        CancellationToken::from_node(child)
    }

    /// Cancels this token and its children, waking every task waiting in
    /// [`cancelled`](CancellationToken::cancelled). Idempotent.
    pub fn cancel(&self) {
        cancel_tree(self.handle.node.clone());
    }

    /// Whether the token (or an ancestor) was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.handle.node.is_cancelled()
    }

    /// Waits until the token is cancelled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only removes its waker.
    pub fn cancelled(&self) -> WaitForCancellation<'_> {
        WaitForCancellation {
            node: &self.handle.node,
            key: None,
        }
    }

    /// [`cancelled`](CancellationToken::cancelled) that owns (a clone of)
    /// the token: a `'static` future.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only removes its waker.
    pub fn cancelled_owned(self) -> WaitForCancellationOwned {
        WaitForCancellationOwned {
            token: self,
            key: None,
        }
    }

    /// Runs `future` to its end, unless the token is cancelled first:
    /// `Some(output)`, or `None` with `future` dropped. As in tokio-util:
    /// a token already cancelled never polls `future`; after that each
    /// poll tries `future` first (biased towards its completion), so an
    /// output that is ready is never thrown away.
    ///
    /// ```
    /// use ringshard::sync::CancellationToken;
    /// # let rt = ringshard::Runtime::builder().worker_threads(1).build()?;
    /// rt.block_on(async {
    ///     let token = CancellationToken::new();
    ///     assert_eq!(token.run_until_cancelled(async { 7 }).await, Some(7));
    ///     token.cancel();
    ///     assert_eq!(token.run_until_cancelled(std::future::pending::<u8>()).await, None);
    /// });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Cancel safety
    ///
    /// As `future`'s own: dropping this drops it.
    pub async fn run_until_cancelled<F: Future>(&self, future: F) -> Option<F::Output> {
        if self.is_cancelled() {
            return None;
        }
        let mut future = std::pin::pin!(future);
        let mut cancelled = std::pin::pin!(self.cancelled());
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            cancelled.as_mut().poll(cx).map(|()| None)
        })
        .await
    }

    /// A guard that cancels this token when it is dropped (unless
    /// disarmed): ties a token to a scope.
    pub fn drop_guard(self) -> DropGuard {
        DropGuard { token: Some(self) }
    }
}

impl Default for CancellationToken {
    fn default() -> CancellationToken {
        CancellationToken::new()
    }
}

impl fmt::Debug for CancellationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancellationToken")
            .field("is_cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut lists = self.node.lock();
        lists.has_handle = false;
        let unused = lists.children.is_empty();
        drop(lists);
        if unused {
            detach(&self.node);
        }
    }
}

/// The future of [`CancellationToken::cancelled`].
#[must_use = "futures do nothing unless awaited"]
pub struct WaitForCancellation<'a> {
    node: &'a Node,
    /// Our waker's key in the node's `waiters`.
    key: Option<usize>,
}

impl Node {
    /// A wait for the cancel: `Ready` once cancelled, else `cx`'s waker
    /// is kept (under `key`) for the cancel to wake.
    fn poll_cancelled(&self, key: &mut Option<usize>, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_cancelled() {
            *key = None;
            return Poll::Ready(());
        }
        let mut lists = self.lock();
        // `cancel` sets the flag before it takes the list: checked under the
        // lock, the flag tells whether our waker will be seen.
        if self.is_cancelled() {
            *key = None;
            return Poll::Ready(());
        }
        match key.and_then(|k| lists.waiters.get_mut(k)) {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            Some(waker) => *waker = cx.waker().clone(),
            None => *key = Some(lists.waiters.insert(cx.waker().clone())),
        }
        Poll::Pending
    }

    /// A wait dropped before the cancel: forget its waker.
    fn stop_waiting(&self, key: Option<usize>) {
        if let Some(key) = key {
            if !self.is_cancelled() {
                self.lock().waiters.try_remove(key);
            }
        }
    }
}

impl Future for WaitForCancellation<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.node.poll_cancelled(&mut this.key, cx)
    }
}

impl Drop for WaitForCancellation<'_> {
    fn drop(&mut self) {
        self.node.stop_waiting(self.key);
    }
}

/// The future of [`CancellationToken::cancelled_owned`]: owns its token, so
/// it is `'static` (it can be moved into a spawned task).
#[must_use = "futures do nothing unless awaited"]
pub struct WaitForCancellationOwned {
    token: CancellationToken,
    key: Option<usize>,
}

impl Future for WaitForCancellationOwned {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.token.handle.node.poll_cancelled(&mut this.key, cx)
    }
}

impl Drop for WaitForCancellationOwned {
    fn drop(&mut self) {
        self.token.handle.node.stop_waiting(self.key);
    }
}

impl fmt::Debug for WaitForCancellationOwned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitForCancellationOwned").finish()
    }
}

/// Cancels its token when dropped, unless [`disarm`](DropGuard::disarm)ed:
/// see [`CancellationToken::drop_guard`].
#[must_use = "dropping the guard at once cancels the token"]
pub struct DropGuard {
    token: Option<CancellationToken>,
}

impl DropGuard {
    /// Gives the token back without cancelling it.
    pub fn disarm(mut self) -> CancellationToken {
        self.token.take().expect("taken only here and in drop")
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            token.cancel();
        }
    }
}

impl fmt::Debug for DropGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropGuard")
            .field("armed", &self.token.is_some())
            .finish()
    }
}

impl fmt::Debug for WaitForCancellation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitForCancellation").finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn children(token: &CancellationToken) -> usize {
        token.handle.node.lock().children.len()
    }

    #[test]
    fn cancelling_a_parent_cancels_every_descendant() {
        let root = CancellationToken::new();
        let child = root.child_token();
        let grandchild = child.child_token();
        let sibling = root.child_token();
        root.cancel();
        assert!(child.is_cancelled() && grandchild.is_cancelled() && sibling.is_cancelled());
    }

    #[test]
    fn cancelling_a_child_leaves_the_parent() {
        let root = CancellationToken::new();
        let child = root.child_token();
        child.cancel();
        assert!(child.is_cancelled());
        assert!(!root.is_cancelled());
    }

    #[test]
    fn child_of_a_cancelled_token_starts_cancelled() {
        let root = CancellationToken::new();
        root.cancel();
        assert!(root.child_token().is_cancelled());
    }

    #[test]
    fn dropped_children_leave_the_parent() {
        let root = CancellationToken::new();
        for _ in 0..1000 {
            let child = root.child_token();
            let _clone = child.clone();
        }
        assert_eq!(children(&root), 0);
    }

    #[test]
    fn dropped_middle_token_still_relays_cancel() {
        let root = CancellationToken::new();
        let grandchild = root.child_token().child_token();
        assert_eq!(
            children(&root),
            1,
            "the middle node must stay while it has a child"
        );
        root.cancel();
        assert!(grandchild.is_cancelled());
        drop(grandchild);
        assert_eq!(children(&root), 0);
    }

    #[test]
    fn middle_node_leaves_once_its_last_child_goes() {
        let root = CancellationToken::new();
        let grandchild = root.child_token().child_token();
        drop(grandchild);
        assert_eq!(children(&root), 0);
    }

    /// A cancelled node that already left its parent must not, when its
    /// own last child goes, remove the sibling that reused its slot.
    #[test]
    fn a_detached_node_never_removes_a_sibling_that_took_its_slot() {
        let root = CancellationToken::new();
        let x = root.child_token();
        let g = x.child_token();
        x.cancel();
        drop(x);
        let y = root.child_token();
        drop(g);
        assert_eq!(children(&root), 1, "y is still root's child");
        root.cancel();
        assert!(y.is_cancelled(), "the cancel reached y");
    }

    #[test]
    fn dropped_waiter_removes_its_waker() {
        let token = CancellationToken::new();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..100 {
            let mut wait = token.cancelled();
            assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
        }
        assert_eq!(token.handle.node.lock().waiters.len(), 0);
    }

    #[test]
    fn cancel_from_another_thread_wakes_the_waiter() {
        for _ in 0..200 {
            let token = CancellationToken::new();
            let child = token.child_token();
            let canceller = std::thread::spawn(move || token.cancel());
            crate::channel::thread_block_on("test", child.cancelled());
            canceller.join().unwrap();
        }
    }
}
