//! The one place a configured transport becomes a type: code generic over [`Transport`]
//! is written once, as a visitor, and [`dispatch`] calls it with the concrete type an
//! [`Endpoint`] names (iceoryx2's `perform_benchmark<T: Service>`, crossbeam-channel's
//! flavor match). Roles, benches and the conformance suite all go through here, so adding
//! a transport is its module, one line in [`dispatch`] (and in [`dispatch_bare`] if it
//! has a bare baseline) and its conformance run.
//!
//! ```
//! use ipcbench_transport::dispatch::{dispatch, WithTransport};
//! use ipcbench_transport::{Endpoint, EndpointOptions, Transport, TransportKind};
//!
//! struct KindOf;
//! impl WithTransport for KindOf {
//!     type Output = TransportKind;
//!     fn call<T: Transport>(self) -> TransportKind {
//!         T::KIND
//!     }
//! }
//! let dir = tempfile::tempdir().unwrap();
//! let ep = Endpoint::prepare(TransportKind::Uds, dir.path(), &EndpointOptions::default()).unwrap();
//! assert_eq!(dispatch(&ep, KindOf).unwrap(), TransportKind::Uds);
//! ```

use crate::{
    Endpoint, Link, Mq, Pipe, Queue, Shm, StreamRx, StreamTx, Tcp, Transport, TransportKind, Uds,
};

/// Code generic over a transport, run by [`dispatch`] with the concrete type.
pub trait WithTransport {
    /// What the code returns.
    type Output;
    /// Runs the code with `T` the endpoint's transport.
    fn call<T: Transport>(self) -> Self::Output;
}

/// Code generic over a stream transport whose halves are the plain socket or FIFO
/// (`StreamTx`/`StreamRx`): the bare baselines, run by [`dispatch_bare`].
pub trait WithStream {
    /// What the code returns.
    type Output;
    /// Runs the code with `T` the endpoint's transport.
    fn call<T: Transport<Tx = StreamTx, Rx = StreamRx>>(self) -> Self::Output;
}

/// A transport with no implementation for what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// The queue over a transport it cannot run over.
    #[error("queue does not run over {0}")]
    QueueOver(TransportKind),
    /// A peer this build was made without (its cargo feature off).
    #[error("{0} is not in this build (its cargo feature is off)")]
    NotBuilt(TransportKind),
    /// Loans were asked of a transport that copies.
    #[error("{0} does not lend its memory (shm and iceoryx2 do)")]
    NoLoans(TransportKind),
    /// A bare baseline was asked of a transport that has none.
    #[error("{0} has no bare baseline (pipe, uds and tcp have)")]
    NoBareBaseline(TransportKind),
}

/// Runs `code` with the transport type `endpoint` names (for a `queue` endpoint: the
/// queue over its transport).
pub fn dispatch<V: WithTransport>(
    endpoint: &Endpoint,
    code: V,
) -> Result<V::Output, DispatchError> {
    dispatch_kind(endpoint.kind(), endpoint.base_kind(), code)
}

/// [`dispatch`] by kinds: `kind`, and for `queue` the kind it runs `over`.
pub fn dispatch_kind<V: WithTransport>(
    kind: TransportKind,
    over: TransportKind,
    code: V,
) -> Result<V::Output, DispatchError> {
    Ok(match (kind, over) {
        (TransportKind::Pipe, _) => code.call::<Pipe>(),
        (TransportKind::Uds, _) => code.call::<Uds>(),
        (TransportKind::Tcp, _) => code.call::<Tcp>(),
        (TransportKind::Shm, _) => code.call::<Shm>(),
        (TransportKind::Mq, _) => code.call::<Mq>(),
        #[cfg(feature = "zmq")]
        (TransportKind::Zmq, _) => code.call::<crate::Zmq>(),
        #[cfg(not(feature = "zmq"))]
        (TransportKind::Zmq, _) => return Err(DispatchError::NotBuilt(TransportKind::Zmq)),
        #[cfg(feature = "iceoryx2")]
        (TransportKind::Iceoryx2, _) => code.call::<crate::Iceoryx2>(),
        #[cfg(not(feature = "iceoryx2"))]
        (TransportKind::Iceoryx2, _) => {
            return Err(DispatchError::NotBuilt(TransportKind::Iceoryx2))
        }
        (TransportKind::Queue, TransportKind::Uds) => code.call::<Queue<Uds>>(),
        (TransportKind::Queue, TransportKind::Tcp) => code.call::<Queue<Tcp>>(),
        (TransportKind::Queue, TransportKind::Shm) => code.call::<Queue<Shm>>(),
        (TransportKind::Queue, other) => return Err(DispatchError::QueueOver(other)),
    })
}

/// Runs `code` with the stream transport of kind `kind`: the transports that have a bare
/// baseline (the same system calls with no framing of ours). The one list of them.
pub fn dispatch_bare<V: WithStream>(
    kind: TransportKind,
    code: V,
) -> Result<V::Output, DispatchError> {
    Ok(match kind {
        TransportKind::Pipe => code.call::<Pipe>(),
        TransportKind::Uds => code.call::<Uds>(),
        TransportKind::Tcp => code.call::<Tcp>(),
        other @ (TransportKind::Shm
        | TransportKind::Queue
        | TransportKind::Mq
        | TransportKind::Zmq
        | TransportKind::Iceoryx2) => return Err(DispatchError::NoBareBaseline(other)),
    })
}

/// Code generic over a [`Link`]: a role that keeps both halves on its own thread, run by
/// [`dispatch_link`].
pub trait WithLink {
    /// What the code returns.
    type Output;
    /// Runs the code with `L` the endpoint's link.
    fn call<L: Link>(self) -> Self::Output;
}

/// Runs `code` with the link `endpoint` names: its transport, except where a setup
/// whose halves stay on one thread is what a user of the library would pick (iceoryx2's
/// local `ipc` service, [`crate::Iceoryx2Local`], rather than its thread-safe one).
pub fn dispatch_link<V: WithLink>(
    endpoint: &Endpoint,
    code: V,
) -> Result<V::Output, DispatchError> {
    struct Any<V>(V);
    impl<V: WithLink> WithTransport for Any<V> {
        type Output = V::Output;
        fn call<T: Transport>(self) -> V::Output {
            self.0.call::<T>()
        }
    }
    match endpoint.kind() {
        #[cfg(feature = "iceoryx2")]
        TransportKind::Iceoryx2 => Ok(code.call::<crate::Iceoryx2Local>()),
        _ => dispatch(endpoint, Any(code)),
    }
}

/// Code generic over a link whose halves lend their memory ([`LoanTx`], [`LoanRx`]),
/// run by [`dispatch_loans`] (a role that keeps both halves on its thread).
pub trait WithLoans {
    /// What the code returns.
    type Output;
    /// Runs the code with `T` the endpoint's link.
    fn call<T: Link>(self) -> Self::Output
    where
        T::Tx: crate::LoanTx,
        T::Rx: crate::LoanRx;
}

/// Runs `code` with the transport of kind `kind` if its halves lend their memory: the one
/// list of them.
pub fn dispatch_loans<V: WithLoans>(
    kind: TransportKind,
    code: V,
) -> Result<V::Output, DispatchError> {
    Ok(match kind {
        TransportKind::Shm => code.call::<Shm>(),
        #[cfg(feature = "iceoryx2")]
        TransportKind::Iceoryx2 => code.call::<crate::Iceoryx2Local>(),
        other => return Err(DispatchError::NoLoans(other)),
    })
}

/// Whether `kind` lends its memory: answered by [`dispatch_loans`] itself.
pub fn lends(kind: TransportKind) -> bool {
    struct Probe;
    impl WithLoans for Probe {
        type Output = ();
        fn call<T: Link>(self)
        where
            T::Tx: crate::LoanTx,
            T::Rx: crate::LoanRx,
        {
        }
    }
    dispatch_loans(kind, Probe).is_ok()
}

/// Whether `kind` has a bare baseline: answered by [`dispatch_bare`] itself.
pub fn has_bare_baseline(kind: TransportKind) -> bool {
    struct Probe;
    impl WithStream for Probe {
        type Output = ();
        fn call<T: Transport<Tx = StreamTx, Rx = StreamRx>>(self) {}
    }
    dispatch_bare(kind, Probe).is_ok()
}

/// Whether a `queue` runs over `kind`: answered by [`dispatch_kind`] itself.
pub fn queue_runs_over(kind: TransportKind) -> bool {
    struct Probe;
    impl WithTransport for Probe {
        type Output = ();
        fn call<T: Transport>(self) {}
    }
    dispatch_kind(TransportKind::Queue, kind, Probe).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_dispatches_to_itself() {
        struct KindOf;
        impl WithTransport for KindOf {
            type Output = TransportKind;
            fn call<T: Transport>(self) -> TransportKind {
                T::KIND
            }
        }
        for kind in TransportKind::ALL {
            let over = if kind == TransportKind::Queue {
                TransportKind::Uds
            } else {
                kind
            };
            assert_eq!(dispatch_kind(kind, over, KindOf), Ok(kind));
        }
        assert_eq!(
            dispatch_kind(TransportKind::Queue, TransportKind::Pipe, KindOf),
            Err(DispatchError::QueueOver(TransportKind::Pipe))
        );
    }

    #[test]
    fn bare_baselines_are_the_stream_transports() {
        let bare: Vec<TransportKind> = TransportKind::ALL
            .into_iter()
            .filter(|k| has_bare_baseline(*k))
            .collect();
        assert_eq!(
            bare,
            [TransportKind::Pipe, TransportKind::Uds, TransportKind::Tcp]
        );
        let over: Vec<TransportKind> = TransportKind::ALL
            .into_iter()
            .filter(|k| queue_runs_over(*k))
            .collect();
        assert_eq!(
            over,
            [TransportKind::Uds, TransportKind::Tcp, TransportKind::Shm]
        );
    }
}
